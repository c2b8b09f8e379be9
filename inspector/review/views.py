"""Review screens: one image at a time, keyboard first (htmx swaps the item), and a grid for bulk decisions.

Thin doors over inspector.review.services and .selectors: parse, check access, call, render.
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
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product
from inspector.products.selectors import product_get_for_user
from inspector.review import selectors, services
from inspector.review.selectors import QueueFilters

GRID_PAGE_SIZE = 48
QUEUE_LIMIT = 20000  # ids read to place an image in the queue (the same bound as selectors.queue_position)
LEASE_TRIES = 50  # queue items tried for a lease before giving up (another reviewer may take them first)
MAX_STALE_MESSAGES = 20
ITEM_RELATED = (
    "batch",
    "support_set",
    "predicted_type",
    "confirmed_type",
    "nearest_support",
    "reviewed_by",
    "classifier_version",
    "lease_by",
)


# ------------------------------------------------------------------------------------------------ helpers


def _filters(request: HttpRequest) -> QueueFilters:
    """The queue filters, from the query string or (POST) the form's hidden fields; "type" and "verdict" are
    filters, so a decision's verdict and type travel as "decision" and "defect_type"."""
    return QueueFilters.from_query(request.POST if request.method == "POST" else request.GET)


def _int(value) -> int | None:
    return int(value) if str(value or "").isdigit() else None


def _url(name: str, product: Product, query: dict[str, str]) -> str:
    return f"{reverse(name, args=[product.pk])}?{urlencode(query)}"


def _item_get(*, product: Product, inspection_id: int | None) -> Inspection:
    """An image of this product (the product's access was checked by the caller); 404 otherwise."""
    if inspection_id is None:
        raise Http404("no image given")
    try:
        return Inspection.objects.select_related(*ITEM_RELATED).get(pk=inspection_id, batch__product=product)
    except Inspection.DoesNotExist:
        raise Http404("no such image in this product") from None


def _defect_type(*, product: Product, value) -> DefectType | None:
    if not value:
        return None
    type_id = _int(value)
    found = product.defect_types.filter(pk=type_id).first() if type_id else None
    if found is None:
        raise ValidationError({"defect_type": "no such defect type in this product"})
    return found


def _queue_ids(*, product: Product, filters: QueueFilters, user) -> list[int]:
    """The free queue (without images other reviewers hold), in queue order."""
    qs = selectors.queue_next(product=product, filters=filters, user=user)
    return list(qs.values_list("id", flat=True)[:QUEUE_LIMIT])


def _lease_first(*, user, ids: list[int]) -> int | None:
    """The first of `ids` the user could lease: when another reviewer took one meanwhile, the next one."""
    tries = ids[:LEASE_TRIES]
    rows = Inspection.objects.only("id").in_bulk(tries)
    for pk in tries:
        if pk in rows and services.lease_take(inspection=rows[pk], user=user):
            return pk
    return None


def _after(ids: list[int], pk: int) -> list[int]:
    """The queue read on from `pk`: the images after it, then (wrapping) those before it."""
    if pk not in ids:
        return ids
    k = ids.index(pk)
    return ids[k + 1 :] + ids[:k]


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
    types = services.defect_types_live(product=product)
    context = {
        "product": product,
        "filters": filters,
        "filter_query": filters.as_query(),
        "query_string": urlencode(filters.as_query()),
        "types": types,
        "batches": product.batches.order_by("-created_at")[:50],
        "inspection": inspection,
        "notice": notice,
        "held": held,
        "pending_type": pending_type,
    }
    if inspection is None:
        context["total"] = selectors.queue(product=product, filters=filters).count()
        return context
    index, total = selectors.queue_position(product=product, filters=filters, inspection_id=inspection.pk)
    verdict, suggested = _suggestion(inspection)
    colours = {t.name: t for t in types}
    upcoming = (
        selectors.queue_next(product=product, filters=filters, user=user)
        .exclude(pk=inspection.pk)
        .values_list("image", "heatmap")
        .first()
    )
    context.update(
        position=None if index is None else index + 1,
        total=total,
        suggest_verdict=verdict,
        suggest_type=suggested,
        ranking=[(name, sim, colours.get(name)) for name, sim in (inspection.predicted_ranking or [])],
        events=selectors.history(inspection=inspection),
        thresholds=inspection.support_set.thresholds or {},
        preload=[name for name in (upcoming or ()) if name],
    )
    return context


def _render(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    """The whole review page, or for htmx the item partial only (one URL, two renderings)."""
    template = "review/_item.html" if request.htmx else "review/review.html"
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _refused(message: str, *, status: int) -> HttpResponse:
    """A refusal shown in the page's alert region by review.js; the item on screen stays as it is."""
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


# -------------------------------------------------------------------------------------------- review screen


@login_required
@require_GET
def review_screen(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    held = None
    item_id = _int(request.GET.get("item"))
    if item_id is not None:
        wanted = _item_get(product=product, inspection_id=item_id)
        if services.lease_take(inspection=wanted, user=request.user):
            return _render(request, _context(product=product, filters=filters, user=request.user, inspection=wanted))
        held = wanted
    pk = _lease_first(user=request.user, ids=_queue_ids(product=product, filters=filters, user=request.user))
    inspection = None if pk is None else _item_get(product=product, inspection_id=pk)
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, held=held)
    )


@login_required
@require_POST
def review_decide(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    inspection = _item_get(product=product, inspection_id=_int(request.POST.get("item")))
    order = _queue_ids(product=product, filters=filters, user=request.user)
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
        return redirect(_url("review", product, filters.as_query()))
    free = set(_queue_ids(product=product, filters=filters, user=request.user))
    pk = _lease_first(user=request.user, ids=[i for i in _after(order, inspection.pk) if i in free])
    following = None if pk is None else _item_get(product=product, inspection_id=pk)
    return _render(request, _context(product=product, filters=filters, user=request.user, inspection=following))


@login_required
@require_POST
def review_undo(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
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
        return redirect(_url("review", product, {**filters.as_query(), "item": str(undone.pk)}))
    inspection = _item_get(product=product, inspection_id=undone.pk)
    notice = f"Undone: {inspection.original_name} is back as it was before your decision."
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, notice=notice)
    )


@login_required
@require_POST
def review_move(request: HttpRequest, product_id: int) -> HttpResponse:
    """Previous/next image in queue order, without deciding; the lease on the image left is released."""
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    current = _int(request.POST.get("item"))
    backwards = request.POST.get("direction") == "prev"
    ids = _queue_ids(product=product, filters=filters, user=request.user)
    if current in ids:
        k = ids.index(current)
        candidates = list(reversed(ids[:k])) if backwards else ids[k + 1 :]
    else:
        candidates = list(reversed(ids)) if backwards else ids
    pk = _lease_first(user=request.user, ids=candidates)
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
        return redirect(_url("review", product, query))
    return _render(
        request, _context(product=product, filters=filters, user=request.user, inspection=inspection, notice=notice)
    )


@login_required
@require_POST
def review_type_create(request: HttpRequest, product_id: int) -> HttpResponse:
    """N: a new defect type, selected at once as the pending choice for the image on screen."""
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    try:
        defect_type = services.defect_type_create(product=product, name=request.POST.get("name", ""))
    except ValidationError as exc:
        return _refused(" ".join(exc.messages), status=400)
    current = _int(request.POST.get("item"))
    inspection = None
    if current is not None:
        inspection = _item_get(product=product, inspection_id=current)
        services.lease_take(inspection=inspection, user=request.user)
    if not request.htmx:
        return redirect(_url("review", product, filters.as_query() | ({"item": str(current)} if current else {})))
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


@login_required
@require_POST
def review_train(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    try:
        version = services.classifier_train_request(product=product, user=request.user)
    except ValidationError as exc:
        text, ok = " ".join(exc.messages), False
    else:
        text, ok = f"Classifier v{version.version}: {version.status}.", True
    if request.htmx:
        return render(request, "review/_train_result.html", {"text": text, "ok": ok})
    (messages.success if ok else messages.error)(request, text)
    return redirect(_url("review", product, _filters(request).as_query()))


# ----------------------------------------------------------------------------------------------------- grid


@login_required
@require_GET
def review_grid(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    page = Paginator(selectors.queue(product=product, filters=filters), GRID_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "review/grid.html",
        {
            "product": product,
            "filters": filters,
            "filter_query": filters.as_query(),
            "query_string": urlencode(filters.as_query()),
            "types": services.defect_types_live(product=product),
            "batches": product.batches.order_by("-created_at")[:50],
            "page": page,
        },
    )


def _bulk_items(request: HttpRequest, *, product: Product, filters: QueueFilters) -> list[tuple[int, int | None]]:
    """(id, version shown) of the ticked images; for scope=all every image matching the filters now, with its
    current version (the reviewer saw the count, not each image)."""
    if request.POST.get("scope") == "all":
        return list(selectors.queue(product=product, filters=filters).values_list("id", "review_version"))
    items = []
    for value in request.POST.getlist("items"):
        pk, _, version = value.partition(":")
        if pk.isdigit():
            items.append((int(pk), _int(version)))
    return items


@login_required
@require_POST
def review_bulk(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    filters = _filters(request)
    back = _url("review-grid", product, filters.as_query() | {"page": request.POST.get("page", "1")})
    action = request.POST.get("action")
    try:
        defect_type = _defect_type(product=product, value=request.POST.get("defect_type")) if action == "type" else None
        if action not in ("good", "type") or (action == "type" and defect_type is None):
            raise ValidationError("choose an action: mark good, or a defect type to assign")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(back)
    items = _bulk_items(request, product=product, filters=filters)
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
