"""The classifier's pages: its versions (train now, progress, evaluation, promote, reject, roll back) on one URL
that htmx polls while a version trains, and the review screen's "train now" button."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from inspector.classifier import selectors, services
from inspector.htmx import render_polled
from inspector.products.models import Product, Role
from inspector.products.selectors import product_get_for_user
from inspector.review.models import ClassifierVersion
from inspector.review.selectors import QueueFilters
from inspector.review.views import review_url


def _context(product: Product) -> dict:
    versions = list(selectors.classifier_versions(product=product))
    return {
        "product": product,
        "versions": versions,
        "active": next((v for v in versions if v.is_active), None),
        "busy": any(v.status in (ClassifierVersion.Status.QUEUED, ClassifierVersion.Status.TRAINING) for v in versions),
        "since": selectors.confirmations_since_last_version(product_id=product.pk),
        "retrain_every": settings.INSPECTOR_RETRAIN_EVERY,
    }


def _act(request: HttpRequest, product: Product, action: str) -> None:
    """One lead action of the page; its outcome becomes a message."""
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


@login_required
def classifier(request: HttpRequest, product_id: int) -> HttpResponse:
    """Everyone in the team sees the versions; training, promoting, rejecting, rolling back need a lead. For htmx
    the versions table only, polled while a version trains: status 286 and a page reload once none is busy."""
    role = Role.LEAD if request.method == "POST" else Role.OPERATOR
    product = product_get_for_user(user=request.user, product_id=product_id, role=role)
    if request.method == "POST":
        try:
            _act(request, product, request.POST.get("action", ""))
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        except (ValueError, ClassifierVersion.DoesNotExist):
            messages.error(request, "no such classifier version")
        return redirect("classifier", product_id=product.pk)
    context = _context(product)
    return render_polled(
        request,
        "classifier/classifier.html",
        "classifier/_versions.html",
        context,
        finished=not context["busy"],
        reload_when_finished=True,
    )


@login_required
@require_POST
def review_train(request: HttpRequest, product_id: int) -> HttpResponse:
    """The review screen's "train now": for htmx a one-line result, otherwise a message and back to the queue."""
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
    try:
        version = services.classifier_train_request(product=product, user=request.user)
    except ValidationError as exc:
        text, ok = " ".join(exc.messages), False
    else:
        text, ok = f"Classifier v{version.version}: {version.status}.", True
    if request.htmx:
        return render(request, "classifier/_train_result.html", {"text": text, "ok": ok})
    (messages.success if ok else messages.error)(request, text)
    return redirect(review_url("review", product, QueueFilters.from_query(request.POST).as_query()))
