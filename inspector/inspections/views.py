from __future__ import annotations

import io
import mimetypes

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from PIL import Image, ImageOps

from inspector.htmx import render_polled
from inspector.inspections import selectors, services
from inspector.inspections.models import Inspection
from inspector.products.models import Role, SupportImage
from inspector.products.selectors import product_get_for_user, team_access_check

PAGE_SIZE = 120
BROWSER_UNSUPPORTED = (".tif", ".tiff")  # browsers cannot show TIFF: served converted to PNG


@login_required
@require_POST
def batch_upload(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id)
    files = [(f.name, f) for f in request.FILES.getlist("images")]
    try:
        batch = services.batch_create(
            product=product,
            user=request.user,
            files=files,
            lot=request.POST.get("lot", ""),
            line=request.POST.get("line", ""),
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("product-detail", product_id=product.pk)
    duplicates = selectors.batch_progress(batch=batch).duplicates
    if duplicates:
        messages.warning(
            request,
            f"{duplicates} of {batch.total} images were uploaded to this product before (same file): "
            "they are inspected again and marked as duplicates.",
        )
    return redirect("batch-detail", batch_id=batch.pk)


@login_required
@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = selectors.batch_get_for_user(user=request.user, batch_id=batch_id)
    verdict = request.GET.get("verdict", "")
    status = request.GET.get("status", "")
    sort = request.GET.get("sort", "id")
    progress = selectors.batch_progress(batch=batch)
    # Paged: the grid is re-rendered on every poll, and a batch can hold thousands of images.
    page = Paginator(
        selectors.batch_inspections(batch=batch, verdict=verdict, status=status, sort=sort), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    context = {
        "batch": batch,
        "progress": progress,
        "inspections": page.object_list,
        "page": page,
        "rejected": batch.rejected_files.all(),
        "duplicates": selectors.batch_duplicates(batch=batch) if progress.duplicates else [],
        "verdict": verdict,
        "status": status,
        "statuses": Inspection.Status.choices,
        "sort": sort,
        "verdicts": Inspection.Verdict.choices,
    }
    return render_polled(
        request, "inspections/batch.html", "inspections/_batch_live.html", context, finished=progress.finished
    )


@login_required
@require_GET
def inspection_detail(request: HttpRequest, inspection_id: int) -> HttpResponse:
    inspection = selectors.inspection_get_for_user(user=request.user, inspection_id=inspection_id)
    return render(
        request,
        "inspections/inspection.html",
        {"inspection": inspection, "thresholds": inspection.support_set.thresholds or {}},
    )


@login_required
@require_GET
def media(request: HttpRequest, path: str) -> FileResponse:
    """Media files go through an access check: the file must belong to a product of a team the user is a member
    of (any role); any other file is a 404, as if it did not exist."""
    if ".." in path.split("/"):
        raise Http404
    owner_team_id = _team_id_for_media(path)
    if owner_team_id is None:
        raise Http404
    team_access_check(user=request.user, team_id=owner_team_id, role=Role.OPERATOR, what="file")
    try:
        fh = default_storage.open(path, "rb")
    except FileNotFoundError:
        raise Http404 from None
    if path.lower().endswith(BROWSER_UNSUPPORTED):
        fh, path = _as_png(fh), path + ".png"
    response = FileResponse(fh, content_type=mimetypes.guess_type(path)[0] or "application/octet-stream")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _team_id_for_media(path: str) -> int | None:
    for qs in (Inspection.objects.filter(image=path), Inspection.objects.filter(heatmap=path)):
        ids = list(qs.values_list("batch__product__team_id", flat=True)[:1])
        if ids:
            return ids[0]
    ids = list(SupportImage.objects.filter(image=path).values_list("support_set__product__team_id", flat=True)[:1])
    return ids[0] if ids else None


def _as_png(fh) -> io.BytesIO:
    with fh, Image.open(fh) as im:
        buf = io.BytesIO()
        ImageOps.exif_transpose(im).convert("RGB").save(buf, format="PNG", compress_level=1)
    buf.seek(0)
    return buf
