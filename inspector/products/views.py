from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inspector import ml
from inspector.htmx import render_polled
from inspector.params import is_db_id
from inspector.products import selectors, services
from inspector.products.models import Role


@login_required
@require_http_methods(["GET", "POST"])
def product_list(request: HttpRequest) -> HttpResponse:
    errors = {}
    if request.method == "POST":
        try:
            team = request.POST.get("team", "")
            product = services.product_create(
                user=request.user,
                name=request.POST.get("name", ""),
                description=request.POST.get("description", ""),
                team_id=int(team) if is_db_id(team) else None,
            )
        except ValidationError as exc:
            errors = exc.message_dict
        else:
            return redirect("product-detail", product_id=product.pk)
    products = selectors.product_list_for_user(user=request.user)
    context = {
        "products": products,
        "errors": errors,
        "lead_teams": selectors.teams_with_role(user=request.user, role=Role.LEAD),
        "has_team": request.user.teams.exists(),
    }
    return render(request, "products/list.html", context, status=400 if errors else 200)


@login_required
@require_GET
def product_detail(request: HttpRequest, product_id: int) -> HttpResponse:
    product = selectors.product_get_for_user(user=request.user, product_id=product_id)
    latest = selectors.support_set_latest(product=product)
    context = {
        "product": product,
        "latest": latest,
        "active": selectors.support_set_active(product=product),
        "support_images": latest.images.all() if latest else [],
        "batches": product.batches.select_related("uploaded_by")[:20],
        "polling": latest is not None and latest.status in ("pending", "fitting"),
        "detector_methods": ml.detector_labels(),
        # forms a role cannot use are not shown (the views refuse them anyway)
        "can_review": Role.at_least(product.user_role, Role.REVIEWER),
        "can_lead": Role.at_least(product.user_role, Role.LEAD),
    }
    # When fitting ends the page reloads: the batch form is shown only with a ready support set.
    return render_polled(
        request,
        "products/detail.html",
        "products/_support_status.html",
        context,
        finished=not context["polling"],
        reload_when_finished=True,
    )


@login_required
@require_POST
def support_upload(request: HttpRequest, product_id: int) -> HttpResponse:
    product = selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
    files = [(f.name, f) for f in request.FILES.getlist("images")]
    try:
        support_set, rejected = services.support_set_create(product=product, user=request.user, files=files)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Support set v{support_set.version}: {support_set.images.count()} images, fitting.")
        for r in rejected:
            messages.warning(request, f"{r.name}: {r.reason}")
    return redirect("product-detail", product_id=product.pk)


@login_required
@require_POST
def product_detector(request: HttpRequest, product_id: int) -> HttpResponse:
    product = selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
    try:
        refit = services.product_detector_set(product=product, user=request.user, method=request.POST.get("method", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("product-detail", product_id=product.pk)
    if refit is not None:
        messages.success(
            request, f"Detector changed: the good images are fitted again as support set v{refit.version}."
        )
    return redirect("product-detail", product_id=product.pk)
