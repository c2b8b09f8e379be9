"""The dashboard's figures in export-ready shapes: the per-type summary (page table, JSON and CSV), the JSON summary
of everything, and the per-image rows of the CSV exports. The CSV writing itself is inspector.exports."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from inspector.products.models import Product
from inspector.stats.figures import RULES
from inspector.stats.filters import TIME_BASIS, StatsFilters, inspections_in_scope, server_tz
from inspector.stats.rows import GroupRow, ProductStats

SUMMARY_COLUMNS = (
    "type",
    "count",
    "share_pct",
    "rate_pct",
    "reviewed",
    "confirmed",
    "classifier_n",
    "classifier_correct",
    "classifier_accuracy_pct",
)
# The columns of the lot/line and batch tables in the JSON summary (after "batch" and "created_at" for batches).
GROUP_KEYS = ("lot", "line", "inspected", "defects", "defect_rate_pct", "reviewed", "top_type")


def _pick(row: object, names: Iterable[str]) -> dict:
    return {name: getattr(row, name) for name in names}


def summary_rows(stats: ProductStats) -> list[dict]:
    """The per-type summary, one dict per type with SUMMARY_COLUMNS: the table of the page and of the exports."""
    return [{"type": t.name} | _pick(t, SUMMARY_COLUMNS[1:]) for t in stats.types]


def _iso(value: datetime | None) -> str | None:
    return timezone.localtime(value, server_tz()).isoformat(timespec="seconds") if value else None


def _filters_out(f: StatsFilters) -> dict:
    return {
        "from": f.date_from.isoformat() if f.date_from else None,
        "to": f.date_to.isoformat() if f.date_to else None,
        "bucket": f.bucket,
        "batch": f.batch_id,
        "time_basis": TIME_BASIS,
        "time_zone": settings.TIME_ZONE,
    }


def _batch_out(g: GroupRow) -> dict:
    return {"batch": g.batch_id, "created_at": _iso(g.created_at)} | _pick(g, GROUP_KEYS)


def stats_as_dict(stats: ProductStats) -> dict:
    """Everything the dashboard shows, JSON-ready (the API's JSON summary)."""
    return {
        "product": stats.product_id,
        "filters": _filters_out(stats.filters),
        "rules": RULES,
        "totals": _pick(stats, ("inspected", "defects", "defect_rate_pct", "reviewed")),
        "types": summary_rows(stats),
        "series": [
            asdict(b) | {"start": b.start.isoformat(), "by_type_rate_pct": b.by_type_rate_pct} for b in stats.buckets
        ],
        "verdict_mix": {"machine": stats.machine_mix, "reviewed": stats.review_mix, "crosstab": stats.crosstab},
        "override": asdict(stats.override),
        "classifier_versions": [asdict(v) for v in stats.versions],
        "lots": [_pick(g, GROUP_KEYS) for g in stats.lots],
        "batches": [_batch_out(g) for g in stats.batches],
    }


IMAGE_COLUMNS = (
    "file",
    "batch",
    "lot",
    "line",
    "time",
    "score",
    "verdict",
    "predicted_type",
    "confidence",
    "confirmed_type",
    "reviewer",
    "review_time",
)


def image_rows(*, product: Product, filters: StatsFilters) -> Iterator[tuple]:
    """Per-image rows (IMAGE_COLUMNS) of the images in scope, in upload order; `time` is the batch upload time
    (the time basis of every figure), predicted_type is "unknown" for an unknown prediction."""
    qs = (
        inspections_in_scope(product=product, filters=filters)
        .select_related("batch", "predicted_type", "confirmed_type", "reviewed_by")
        .order_by("batch__created_at", "batch_id", "id")
    )
    for i in qs.iterator(chunk_size=2000):
        predicted = i.predicted_type.name if i.predicted_type else ""
        if i.predicted_unknown:
            predicted = "unknown"
        yield (
            i.original_name,
            i.batch_id,
            i.batch.lot,
            i.batch.line,
            _iso(i.batch.created_at),
            None if i.score is None else round(i.score, 6),
            i.verdict,
            predicted,
            None if i.predicted_confidence is None else round(i.predicted_confidence, 4),
            i.confirmed_type.name if i.confirmed_type else "",
            i.reviewed_by.get_username() if i.reviewed_by else "",
            _iso(i.reviewed_at),
        )
