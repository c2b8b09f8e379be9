"""Review screens: one image at a time, keyboard first (htmx swaps the item), and a grid for bulk decisions.

Thin doors over inspector.review.services and .selectors: parse, check access, call, render. The review
screen's "train now" button is the classifier's door (inspector.classifier.views.review_train).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from inspector.htmx import render_htmx
from inspector.inspections.models import Inspection
from inspector.params import is_db_id
from inspector.products.models import DefectType, Product, Role
from inspector.products.selectors import product_get_for_user
from inspector.review import selectors, services
from inspector.review.defect_types import defect_type_create, defect_types_live
from inspector.review.selectors import QueueFilters

GRID_PAGE_SIZE = 48
BULK_MAX = 1000  # decisions per bulk request: each is a transaction with a history event
MAX_STALE_MESSAGES = 20


# ------------------------------------------------------------------------------------------------ helpers


def _filters(request: HttpRequest) -> QueueFilters:
    """The queue filters, from the query string or (POST) the form's hidden fields; "type" and "verdict" are
    filters, so a decision's verdict and type travel as "decision" and "defect_type"."""
    return QueueFilters.from_query(request.POST if request.method == "POST" else request.GET)


def _int(value) -> int | None:
    return int(value) if is_db_id(value, minimum=0) else None


def review_url(name: str, product: Product, query: dict[str, str]) -> str:
    """The URL of a review screen ("review", "review-grid") of the product with the queue's filters."""
    return f"{reverse(name, args=[product.pk])}?{urlencode(query)}"


def _item_get(*, product: Product, inspection_id: int | None) -> Inspection:
    """An image of this product (the product's access was checked by the caller); 404 otherwise."""
    if inspection_id is None:
        raise Http404("no image given")
    inspection = selectors.review_item(product=product, inspection_id=inspection_id)
    if inspection is None:
        raise Http404("no such image in this product")
    return inspection


def _defect_type(*, product: Product, value) -> DefectType | None:
    if not value:
        return None
    found = selectors.defect_type_of_product(product=product, type_id=_int(value))
    if found is None:
        raise ValidationError({"defect_type": "no such defect type in this product"})
    return found


def _suggestion(inspection: Inspection) -> tuple[str, DefectType | None]:
    """What Enter confirms when the reviewer chose nothing: the machine's type, or its "good"."""
    predicted = inspection.predicted_type
    if predicted is not None and not inspection.predicted_unknown and predicted.merged_into_id is None:
        return Inspection.Verdict.DEFECTIVE, predicted
    if inspection.verdict == Inspection.Verdict.GOOD:
        return Inspection.Verdict.GOOD, None
    return "", None


def _context(
    *,
    product: Product,
    filters: QueueFilters,
    user,
    inspection: Inspection | None,
    notice: str = "",
    pending_type: DefectType | None = None,
    held: Inspection | None = None,
) -> dict:
    types = defect_types_live(product=product)
    context = {
        "product": product,
        "filters": filters,
        "filter_query": filters.as_query(),
        "query_string": urlencode(filters.as_query()),
        "types": types,
        "batches": selectors.recent_batches(product=product),
        "inspection": inspection,
        "notice": notice,
        "held": held,
        "pending_type": pending_type,
    }
    if inspection is None:
        context["total"] = selectors.queue(product=product, filters=filters).count()
        return context
    index, total = selectors.queue_position(product=product, filters=filters, inspection=inspection)
    verdict, suggested = _suggestion(inspection)
    colours = {t.name: t for t in types}
    context.update(
        position=None if index is None else index + 1,
        total=total,
        suggest_verdict=verdict,
        suggest_type=suggested,
        ranking=[(name, sim, colours.get(name)) for name, sim in (inspection.predicted_ranking or [])],
        events=selectors.history(inspection=inspection),
        thresholds=inspection.support_set.thresholds or {},
        preload=selectors.next_preload(product=product, filters=filters, user=user, inspection=inspection),
    )
    return context


def _render(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    """The whole review page, or for htmx the item partial only (one URL, two renderings)."""
    return render_htmx(request, "review/review.html", "review/_item.html", context, status=status)


def _refused(message: str, *, status: int) -> HttpResponse:
    """A refusal shown in the page's alert region by review.js; the item on screen stays as it is."""
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


# -------------------------------------------------------------------------------------------- review screen


@login_required
@require_GET
def review_screen(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    held = None
    item_id = _int(request.GET.get("item"))
    if item_id is not None:
        wanted = _item_get(product=product, inspection_id=item_id)
        if services.lease_take(inspection=wanted, user=request.user):
            return _render(request, _context(product=product, filters=filters, user=request.user, inspection=wanted))
        held = wanted
    pk = services.review_next(product=product, filters=filters, user=request.user)
    inspection = None if pk is None else _item_get(product=product, inspection_id=pk)
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, held=held)
    )


@login_required
@require_POST
def review_decide(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    inspection = _item_get(product=product, inspection_id=_int(request.POST.get("item")))
    try:
        services.review_decide(
            inspection_id=inspection.pk,
            user=request.user,
            verdict=request.POST.get("decision", ""),
            defect_type=_defect_type(product=product, value=request.POST.get("defect_type")),
            expected_version=_int(request.POST.get("version")),
        )
    except services.StaleReview as exc:
        return _refused(str(exc), status=409)
    except ValidationError as exc:
        return _refused(" ".join(exc.messages), status=400)
    if not request.htmx:
        return redirect(review_url("review", product, filters.as_query()))
    pk = services.review_next(product=product, filters=filters, user=request.user, current=inspection, wrap=True)
    following = None if pk is None else _item_get(product=product, inspection_id=pk)
    return _render(request, _context(product=product, filters=filters, user=request.user, inspection=following))


@login_required
@require_POST
def review_undo(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    try:
        undone = services.review_undo(user=request.user, product=product)
    except ValidationError as exc:
        return _refused(" ".join(exc.messages), status=409)
    if undone is None:
        return _refused("nothing to undo: you have no decision on this product left", status=400)
    current = _int(request.POST.get("item"))
    if current is not None and current != undone.pk:
        services.lease_release(user=request.user, inspection_id=current)
    if not request.htmx:
        return redirect(review_url("review", product, {**filters.as_query(), "item": str(undone.pk)}))
    inspection = _item_get(product=product, inspection_id=undone.pk)
    notice = f"Undone: {inspection.original_name} is back as it was before your decision."
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, notice=notice)
    )


@login_required
@require_POST
def review_move(request: HttpRequest, product_id: int) -> HttpResponse:
    """Previous/next image in queue order, without deciding; the lease on the image left is released."""
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    current = _int(request.POST.get("item"))
    backwards = request.POST.get("direction") == "prev"
    here = selectors.review_item(product=product, inspection_id=current)
    pk = services.review_next(product=product, filters=filters, user=request.user, current=here, backwards=backwards)
    notice = ""
    if pk is None:
        notice = "This is the first free image of the queue." if backwards else "This is the last free image."
        pk = current
        if current is not None:
            services.lease_take(inspection=_item_get(product=product, inspection_id=current), user=request.user)
    elif current is not None and current != pk:
        services.lease_release(user=request.user, inspection_id=current)
    inspection = None if pk is None else _item_get(product=product, inspection_id=pk)
    if not request.htmx:
        query = filters.as_query() | ({"item": str(pk)} if pk else {})
        return redirect(review_url("review", product, query))
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, notice=notice)
    )


@login_required
@require_POST
def review_type_create(request: HttpRequest, product_id: int) -> HttpResponse:
    """N: a new defect type, selected at once as the pending choice for the image on screen."""
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
    filters = _filters(request)
    try:
        defect_type = defect_type_create(product=product, name=request.POST.get("name", ""))
    except ValidationError as exc:
        return _refused(" ".join(exc.messages), status=400)
    current = _int(request.POST.get("item"))
    inspection = None
    if current is not None:
        inspection = _item_get(product=product, inspection_id=current)
        services.lease_take(inspection=inspection, user=request.user)
    if not request.htmx:
        return redirect(review_url("review", product, filters.as_query() | ({"item": str(current)} if current else {})))
    key = f" (key {defect_type.shortcut})" if defect_type.shortcut else " (no key left: 1-9 are taken)"
    return _render(
        request,
        _context(
            product=product,
            filters=filters,
            user=request.user,
            inspection=inspection,
            pending_type=defect_type,
            notice=f"New defect type {defect_type.name!r}{key}: press Enter to confirm it for this image.",
        ),
    )


# ----------------------------------------------------------------------------------------------------- grid


@login_required
@require_GET
def review_grid(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    queue = selectors.queue(product=product, filters=filters)
    page = Paginator(queue, GRID_PAGE_SIZE).get_page(request.GET.get("page"))
    all_count, all_max_id = selectors.unreviewed_in_queue(product=product, filters=filters)
    return render(
        request,
        "review/grid.html",
        {
            "product": product,
            "filters": filters,
            "filter_query": filters.as_query(),
            "query_string": urlencode(filters.as_query()),
            "types": defect_types_live(product=product),
            "batches": selectors.recent_batches(product=product),
            "page": page,
            # "All filtered" covers the unreviewed images that existed when the page was drawn (up to BULK_MAX):
            # the count and the newest id shown travel with the form and are checked again.
            "all_count": all_count,
            "all_max_id": all_max_id,
            "bulk_max": BULK_MAX,
        },
    )


class BulkRefused(Exception):
    pass


def _bulk_items(request: HttpRequest, *, product: Product, filters: QueueFilters) -> list[tuple[int, int | None]]:
    """(id, version shown) of the ticked images. For scope=all: the unreviewed images matching the filters that
    existed when the grid was drawn (id <= the newest shown), refused when their number is no longer the one the
    reviewer saw, or above BULK_MAX; reviewed images are never included (use the ticks to change decisions)."""
    if request.POST.get("scope") == "all":
        expected, max_id = _int(request.POST.get("all_count")), _int(request.POST.get("all_max_id"))
        if expected is None or max_id is None:
            raise BulkRefused("reload the grid: the form is missing the count it showed")
        if expected > BULK_MAX:
            raise BulkRefused(f"{expected} images at once is more than {BULK_MAX}: narrow the filters (batch, lot)")
        items = selectors.unreviewed_items(product=product, filters=filters, max_id=max_id, limit=BULK_MAX + 1)
        if len(items) != expected:
            raise BulkRefused(
                f"the filtered set changed since the grid was drawn ({expected} then, {len(items)} now): "
                "reload and check before applying to all"
            )
        return items
    items = []
    for value in request.POST.getlist("items"):
        pk, _, version = value.partition(":")
        if is_db_id(pk):
            items.append((int(pk), _int(version)))
    return items[:BULK_MAX]


@login_required
@require_POST
def review_bulk(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    filters = _filters(request)
    back = review_url("review-grid", product, filters.as_query() | {"page": request.POST.get("page", "1")})
    action = request.POST.get("action")
    try:
        defect_type = _defect_type(product=product, value=request.POST.get("defect_type")) if action == "type" else None
        if action not in ("good", "type") or (action == "type" and defect_type is None):
            raise ValidationError("choose an action: mark good, or a defect type to assign")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(back)
    try:
        items = _bulk_items(request, product=product, filters=filters)
    except BulkRefused as exc:
        messages.error(request, str(exc))
        return redirect(back)
    if not items:
        messages.error(request, "no image selected")
        return redirect(back)
    verdict = Inspection.Verdict.GOOD if action == "good" else Inspection.Verdict.DEFECTIVE
    result = services.review_bulk(
        user=request.user, product=product, items=items, verdict=verdict, defect_type=defect_type
    )
    what = "good (false alarm)" if defect_type is None else f"defective: {defect_type.name}"
    messages.success(request, f"{len(result.done)} of {len(items)} images marked {what}.")
    for text in result.stale[:MAX_STALE_MESSAGES]:
        messages.warning(request, f"Skipped: {text}")
    if len(result.stale) > MAX_STALE_MESSAGES:
        messages.warning(request, f"… and {len(result.stale) - MAX_STALE_MESSAGES} more skipped.")
    return redirect(back)
