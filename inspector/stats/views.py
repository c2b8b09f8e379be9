"""The statistics dashboard of a product: one URL, the page or (for htmx) its body."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from inspector.htmx import render_htmx
from inspector.products.models import Product, Role
from inspector.products.selectors import product_get_for_user
from inspector.stats import charts
from inspector.stats.exports import summary_rows
from inspector.stats.figures import RULES, product_stats
from inspector.stats.filters import TIME_BASIS, filters_from_query
from inspector.stats.rows import ProductStats

TOP_TYPES_IN_TIME_CHART = 8  # the rest are one "other types" segment; the table below the chart has them all
BATCH_CHOICES = 200
VERDICT_COLOURS = {"good": "#1d7a3a", "review": "#b26b00", "defective": "#b3261e", "unreviewed": "#c8cdd6"}


def _time_chart(data: ProductStats) -> str:
    shown = data.types[:TOP_TYPES_IN_TIME_CHART]
    rest = [t.name for t in data.types[TOP_TYPES_IN_TIME_CHART:]]
    series = [charts.Series(t.name, t.colour, [b.by_type[t.name] for b in data.buckets]) for t in shown]
    if rest:
        series.append(charts.Series("other types", "#c8cdd6", [sum(b.by_type[n] for n in rest) for b in data.buckets]))
    unit = "week" if data.filters.bucket == "week" else "day"
    labels = [f"{b.start:%Y-%m-%d}" for b in data.buckets]
    return charts.stacked_bars(
        chart_id="chart-time",
        title=f"Defects per {unit} by type",
        desc=f"{data.defects} defects in {len(data.buckets)} {unit}s"
        + (" (labelled by their Monday)" if unit == "week" else "")
        + ", stacked by defect type; "
        "the number on each bar is that bucket's total. The table below gives every figure.",
        categories=labels,
        series=series,
    )


def _pareto_chart(data: ProductStats) -> str:
    return charts.pareto(
        chart_id="chart-pareto",
        title="Pareto of defect types",
        desc=f"{data.defects} defects by type, largest first, with the cumulative share.",
        items=[(t.name, t.count, t.colour) for t in data.types],
    )


def _mix_chart(data: ProductStats) -> str:
    machine = [(v, data.machine_mix.get(v, 0), VERDICT_COLOURS[v]) for v in ("good", "review", "defective")]
    review = [(k, data.review_mix[k], VERDICT_COLOURS[k]) for k in ("unreviewed", "good", "defective")]
    return charts.proportion_bars(
        chart_id="chart-mix",
        title="Verdict mix",
        desc=f"Of {data.inspected} processed images: the detector's verdicts, and the reviewers' outcomes.",
        rows=[("Machine", machine), ("Review", review)],
    )


def _context(product: Product, data: ProductStats) -> dict:
    query = data.filters.as_query()
    date_query = {k: v for k, v in query.items() if k in ("from", "to", "batch")}
    summary_url = reverse("api-product-stats", args=[product.pk])
    return {
        "stats": data,
        "summary": summary_rows(data),
        "time_chart": mark_safe(_time_chart(data)),  # built from escaped parts, see charts.esc
        "pareto_chart": mark_safe(_pareto_chart(data)),
        "mix_chart": mark_safe(_mix_chart(data)),
        "exports": {
            "types_csv": f"{summary_url}?{urlencode({'format': 'csv', **query})}",
            "types_json": f"{summary_url}?{urlencode({'format': 'json', **query})}",
            "images_csv": f"{reverse('api-product-export', args=[product.pk])}?{urlencode(date_query)}",
        },
        "query": query,
    }


@login_required
@require_GET
def stats_page(request: HttpRequest, product_id: int) -> HttpResponse:
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.REVIEWER)
    context = {
        "product": product,
        "rules": RULES,
        "time_basis": TIME_BASIS,
        "time_zone": settings.TIME_ZONE,
        "errors": [],
        "form": {k: request.GET.get(k, "") for k in ("from", "to", "bucket", "batch")},
        "batches": product.batches.order_by("-created_at", "-id")[:BATCH_CHOICES],
    }
    try:
        filters = filters_from_query(request.GET)
        data = product_stats(product=product, filters=filters)
    except ValidationError as exc:
        context["errors"] = exc.messages
    else:
        context.update(_context(product, data))
        context["form"] = {"bucket": filters.bucket, "batch": filters.batch_id or ""} | {
            "from": filters.date_from.isoformat() if filters.date_from else "",
            "to": filters.date_to.isoformat() if filters.date_to else "",
        }
    return render_htmx(request, "stats/stats.html", "stats/_body.html", context)
