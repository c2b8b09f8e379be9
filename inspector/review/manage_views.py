"""Product-level pages of the review loop: defect types (create, rename, restyle, merge) and the classifier's
versions (train now, progress, evaluation, promote, roll back), and confirmed false alarms -> good images."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from inspector.htmx import render_polled
from inspector.products.models import Role
from inspector.products.selectors import product_get_for_user
from inspector.review import selectors, services
from inspector.review.models import ClassifierVersion


def _error(request: HttpRequest, exc: ValidationError) -> None:
    messages.error(request, " ".join(exc.messages))


@login_required
def defect_types(request: HttpRequest, product_id: int) -> HttpResponse:
    """Everyone in the team sees the types; creating, editing and merging them needs a lead."""
    role = Role.LEAD if request.method == "POST" else Role.OPERATOR
    product = product_get_for_user(user=request.user, product_id=product_id, role=role)
    if request.method == "POST":
        action = request.POST.get("action", "")
        post = request.POST
        try:
            if action == "create":
                t = services.defect_type_create(
                    product=product,
                    name=post.get("name", ""),
                    colour=post.get("colour", ""),
                    shortcut=post.get("shortcut", ""),
                    description=post.get("description", ""),
                )
                messages.success(request, f"Defect type {t.name!r} created (key {t.shortcut or 'none'}).")
            elif action == "update":
                t = product.defect_types.get(pk=int(post.get("id", "0") or 0))
                services.defect_type_update(
                    defect_type=t,
                    name=post.get("name"),
                    colour=post.get("colour"),
                    shortcut=post.get("shortcut"),
                    description=post.get("description"),
                )
                messages.success(request, f"Saved {t.name!r}.")
            elif action == "merge":
                source = product.defect_types.get(pk=int(post.get("source", "0") or 0))
                target = product.defect_types.get(pk=int(post.get("target", "0") or 0))
                moved = services.defect_type_merge(source=source, target=target, user=request.user)
                messages.success(request, f"Merged {source.name!r} into {target.name!r}: {moved} images moved.")
            else:
                messages.error(request, "unknown action")
        except ValidationError as exc:
            _error(request, exc)
        except (ValueError, product.defect_types.model.DoesNotExist):
            messages.error(request, "no such defect type in this product")
        return redirect("defect-types", product_id=product.pk)
    context = {
        "product": product,
        "types": services.defect_types_live(product=product),
        "merged": product.defect_types.filter(merged_into__isnull=False).select_related("merged_into"),
    }
    return render(request, "products/defect_types.html", context)


def _classifier_context(product) -> dict:
    versions = list(selectors.classifier_versions(product=product))
    return {
        "product": product,
        "versions": versions,
        "active": next((v for v in versions if v.is_active), None),
        "busy": any(v.status in (ClassifierVersion.Status.QUEUED, ClassifierVersion.Status.TRAINING) for v in versions),
        "since": services.confirmations_since_last_version(product_id=product.pk),
        "retrain_every": settings.INSPECTOR_RETRAIN_EVERY,
    }


@login_required
def classifier(request: HttpRequest, product_id: int) -> HttpResponse:
    """Everyone in the team sees the versions; training, promoting, rejecting, rolling back need a lead."""
    role = Role.LEAD if request.method == "POST" else Role.OPERATOR
    product = product_get_for_user(user=request.user, product_id=product_id, role=role)
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "train":
                cv = services.classifier_train_request(product=product, user=request.user)
                messages.success(request, f"Training classifier v{cv.version}.")
            elif action in ("promote", "reject"):
                version = product.classifier_versions.get(version=int(request.POST.get("version", "0") or 0))
                if action == "promote":
                    services.classifier_promote(version=version, user=request.user)
                    messages.success(request, f"v{version.version} is now in use; unreviewed images are re-classified.")
                else:
                    services.classifier_reject(version=version, user=request.user)
                    messages.success(request, f"v{version.version} rejected.")
            elif action == "rollback":
                back = services.classifier_rollback(product=product, user=request.user)
                messages.success(request, f"Rolled back to v{back.version}.")
            else:
                messages.error(request, "unknown action")
        except ValidationError as exc:
            _error(request, exc)
        except (ValueError, ClassifierVersion.DoesNotExist):
            messages.error(request, "no such classifier version")
        return redirect("classifier", product_id=product.pk)
    context = _classifier_context(product)
    return render(request, "products/classifier.html", context)


@login_required
def classifier_live(request: HttpRequest, product_id: int) -> HttpResponse:
    """The versions table, polled by htmx while a version trains."""
    product = product_get_for_user(user=request.user, product_id=product_id)
    context = _classifier_context(product)
    return render_polled(
        request,
        "products/classifier.html",
        "products/_classifier_versions.html",
        context,
        finished=not context["busy"],
        reload_when_finished=True,
    )


@login_required
def false_alarms_to_support(request: HttpRequest, product_id: int) -> HttpResponse:
    role = Role.LEAD if request.method == "POST" else Role.OPERATOR
    product = product_get_for_user(user=request.user, product_id=product_id, role=role)
    if request.method != "POST":
        return redirect("product-detail", product_id=product.pk)
    try:
        support_set = services.false_alarms_to_support(product=product, user=request.user)
        messages.success(
            request, f"Support set v{support_set.version} with the confirmed false alarms added is being fitted."
        )
    except ValidationError as exc:
        _error(request, exc)
    return redirect("product-detail", product_id=product.pk)
