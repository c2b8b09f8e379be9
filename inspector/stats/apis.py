"""Statistics API and CSV exports: thin doors over inspector.stats (the dashboard's own figures).

`?format=` is DRF's URL_FORMAT_OVERRIDE: DRF would pick a renderer by it, and answer 404 for a format no
renderer has. The summary view handles it deliberately: a negotiation class that reads only `format` (json,
the default, or csv; anything else is a 400 that says so) and two renderers. The per-image exports always
stream CSV and ignore `format` and Accept. Errors are always JSON.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.http import StreamingHttpResponse
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.audit.services import audit_export
from inspector.exports import attachment, csv_lines, csv_response
from inspector.inspections import selectors as inspection_selectors
from inspector.products import selectors as product_selectors
from inspector.products.models import Product, Role
from inspector.stats.exports import IMAGE_COLUMNS, SUMMARY_COLUMNS, image_rows, stats_as_dict
from inspector.stats.figures import product_stats
from inspector.stats.filters import BUCKETS, StatsFilters, check_batch, filters_from_query


def _range_name(filters: StatsFilters) -> str:
    if filters.batch_id:
        return f"batch-{filters.batch_id}"
    return f"{filters.date_from or 'start'}_{filters.date_to or 'now'}"


def _product_name(product: Product) -> str:
    return slugify(product.name) or f"product-{product.pk}"


def _filters(request: Request, product: Product) -> StatsFilters:
    try:
        filters = filters_from_query(request.query_params)
        check_batch(product=product, filters=filters)
    except ValidationError as exc:
        raise ApiValidationError(exc.message_dict) from None
    return filters


class SummaryCsvRenderer(BaseRenderer):
    """The per-type summary (SUMMARY_COLUMNS) of a stats dict as CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> str:
        if not isinstance(data, dict) or "types" not in data:
            # Not a stats dict (an OPTIONS description, an error body): one `detail` row rather than a 500.
            detail = data.get("detail", "") if isinstance(data, dict) else ""
            return "".join(csv_lines(["detail"], [[str(detail or "no statistics in this response")]]))
        rows = ([row[c] for c in SUMMARY_COLUMNS] for row in data["types"])
        return "".join(csv_lines(SUMMARY_COLUMNS, rows))


class FormatParameterNegotiation(BaseContentNegotiation):
    """The renderer named by `?format=` (default: the first); Accept is not consulted, so a link always gives
    what it says. An unknown format is a 400 with the formats on offer."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        wanted = (request.query_params.get("format") or renderers[0].format).strip()
        for renderer in renderers:
            if renderer.format == wanted:
                return renderer, renderer.media_type
        offered = " or ".join(r.format for r in renderers)
        raise ApiValidationError({"format": [f"format must be {offered}"]})


class _JsonErrorsMixin:
    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and response.status_code >= 400:  # errors: JSON whatever was asked
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


_FILTER_PARAMS = [
    OpenApiParameter("from", OpenApiTypes.DATE, description="first day, inclusive (server time zone)"),
    OpenApiParameter("to", OpenApiTypes.DATE, description="last day, inclusive (server time zone)"),
]


class ProductStatsApi(_JsonErrorsMixin, APIView):
    """The dashboard's figures: JSON (everything) or CSV (the per-type summary)."""

    renderer_classes = [JSONRenderer, SummaryCsvRenderer]
    content_negotiation_class = FormatParameterNegotiation

    @extend_schema(
        operation_id="product_stats",
        parameters=[
            OpenApiParameter("format", str, enum=["json", "csv"], description="json (default) or csv"),
            *_FILTER_PARAMS,
            OpenApiParameter("bucket", str, enum=list(BUCKETS)),
            OpenApiParameter("batch", int, description="only this batch of the product"),
        ],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, product_id: int) -> Response:
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
        filters = _filters(request, product)
        data = stats_as_dict(product_stats(product=product, filters=filters))
        response = Response(data)
        if request.accepted_renderer.format == "csv":
            filename = f"{_product_name(product)}-defect-types-{_range_name(filters)}.csv"
            response["Content-Disposition"] = attachment(filename)
            audit_export(team=product.team_id, what="defect-type summary", obj=product, query=request.query_params)
        return response


def _stream(filename: str, rows: Iterable[Iterable]) -> StreamingHttpResponse:
    return csv_response(filename, IMAGE_COLUMNS, rows)


class _CsvExportNegotiation(BaseContentNegotiation):
    """Per-image exports are always CSV; the negotiated renderer only renders errors (JSON)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ProductExportApi(_JsonErrorsMixin, APIView):
    """Per-image CSV of a product's processed images in a date range (same scope as the dashboard)."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _CsvExportNegotiation

    @extend_schema(
        operation_id="product_export_csv",
        parameters=[*_FILTER_PARAMS, OpenApiParameter("batch", int)],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, product_id: int) -> StreamingHttpResponse:
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
        filters = _filters(request, product)
        audit_export(team=product.team_id, what="product images", obj=product, query=request.query_params)
        return _stream(
            f"{_product_name(product)}-images-{_range_name(filters)}.csv",
            image_rows(product=product, filters=filters),
        )


class BatchExportApi(_JsonErrorsMixin, APIView):
    """Per-image CSV of one batch (all its processed images; no date limit)."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _CsvExportNegotiation

    @extend_schema(operation_id="batch_export_csv", responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, batch_id: int) -> StreamingHttpResponse:
        batch = inspection_selectors.batch_get_for_user(user=request.user, batch_id=batch_id, role=Role.REVIEWER)
        filters = StatsFilters(batch_id=batch.pk)
        audit_export(team=batch.product.team_id, what="batch images", obj=batch, query=request.query_params)
        return _stream(
            f"{_product_name(batch.product)}-batch-{batch.pk}-images.csv",
            image_rows(product=batch.product, filters=filters),
        )
