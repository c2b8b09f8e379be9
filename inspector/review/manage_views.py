"""Product-level pages of the review loop: defect types (create, rename, restyle, merge), and confirmed false
alarms -> good images. The classifier's page is inspector.classifier.views."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from inspector.products.models import Role
from inspector.products.selectors import product_get_for_user
from inspector.review import services
from inspector.review.defect_types import defect_type_create, defect_type_merge, defect_type_update, defect_types_live


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
                t = defect_type_create(
                    product=product,
                    name=post.get("name", ""),
                    colour=post.get("colour", ""),
                    shortcut=post.get("shortcut", ""),
                    description=post.get("description", ""),
                )
                messages.success(request, f"Defect type {t.name!r} created (key {t.shortcut or 'none'}).")
            elif action == "update":
                t = product.defect_types.get(pk=int(post.get("id", "0") or 0))
                defect_type_update(
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
                moved = defect_type_merge(source=source, target=target, user=request.user)
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
        "types": defect_types_live(product=product),
        "merged": product.defect_types.filter(merged_into__isnull=False).select_related("merged_into"),
    }
    return render(request, "review/defect_types.html", context)


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
