"""The scope of every statistic and export: the filters (`from`, `to`, `bucket`, `batch`), their buckets, and the
processed images they select.

Time is the upload time of the image's batch (Batch.created_at), not the inspection's finished_at: every image of a
batch lands in the same day/week, a queued or failed image has no finished_at, and the per-batch table adds up to
the per-bucket table. `from`/`to` are inclusive days in the server's time zone (settings.TIME_ZONE); weeks start on
Monday.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from inspector.inspections.models import Batch, Inspection
from inspector.params import ParamError, choice_param, date_param, int_param
from inspector.products.models import Product

BUCKETS = ("day", "week")
DEFAULT_DAYS = 30  # without `from`, the dashboard shows the 30 days up to `to`
MAX_BUCKETS = 400  # one chart bar per bucket: beyond this it is unreadable (choose weeks or a shorter range)
TIME_BASIS = "batch upload time (Batch.created_at)"



@dataclass(frozen=True)
class StatsFilters:
    date_from: date | None = None
    date_to: date | None = None
    bucket: str = "day"
    batch_id: int | None = None

    def as_query(self) -> dict[str, str]:
        out = {"bucket": self.bucket}
        if self.date_from:
            out["from"] = self.date_from.isoformat()
        if self.date_to:
            out["to"] = self.date_to.isoformat()
        if self.batch_id:
            out["batch"] = str(self.batch_id)
        return out


def server_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def today() -> date:
    return timezone.localtime(timezone.now(), server_tz()).date()


def _collect(errors: dict[str, str], parse, *args, **kwargs):
    """Run one inspector.params parser; a bad value goes into `errors` (one message per parameter), not raised."""
    try:
        return parse(*args, **kwargs)
    except ParamError as exc:
        errors[exc.name] = str(exc)
        return None


def filters_from_query(query: Mapping) -> StatsFilters:
    """Filters from `from`, `to`, `bucket`, `batch`. Without dates: the 30 days up to today, or, when a batch
    is chosen, no date limit (the whole batch). Raises ValidationError with one message per bad parameter."""
    errors: dict[str, str] = {}
    date_from = _collect(errors, date_param, query, "from", blank_ok=True)
    date_to = _collect(errors, date_param, query, "to", blank_ok=True)
    bucket = _collect(errors, choice_param, query, "bucket", BUCKETS, default="day", blank_ok=True)
    batch_id = _collect(errors, int_param, query, "batch", blank_ok=True)
    if errors:
        raise ValidationError(errors)
    if not (date_from or date_to or batch_id):
        date_to = today()
    if date_to and not date_from and not batch_id:
        date_from = date_to - timedelta(days=DEFAULT_DAYS - 1)
    if date_from and date_to and date_from > date_to:
        raise ValidationError({"from": f"from ({date_from}) is after to ({date_to})"})
    if date_from and date_to and len(bucket_starts(date_from, date_to, bucket)) > MAX_BUCKETS:
        raise ValidationError(
            {"to": f"at most {MAX_BUCKETS} {bucket}s in one view: choose a shorter range or weekly buckets"}
        )
    return StatsFilters(date_from=date_from, date_to=date_to, bucket=bucket, batch_id=batch_id)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=server_tz())


def _bucket_of(day: date, bucket: str) -> date:
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def bucket_starts(first: date, last: date, bucket: str) -> list[date]:
    step = timedelta(days=7 if bucket == "week" else 1)
    out, current = [], _bucket_of(first, bucket)
    while current <= last:
        out.append(current)
        current += step
    return out


def inspections_in_scope(*, product: Product, filters: StatsFilters) -> QuerySet[Inspection]:
    """Processed images of the product within the filters: the base of every figure and export."""
    qs = Inspection.objects.filter(batch__product=product, status=Inspection.Status.DONE)
    if filters.date_from:
        qs = qs.filter(batch__created_at__gte=_day_start(filters.date_from))
    if filters.date_to:
        qs = qs.filter(batch__created_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    if filters.batch_id:
        qs = qs.filter(batch_id=filters.batch_id)
    return qs


def check_batch(*, product: Product, filters: StatsFilters) -> None:
    """A batch filter must name a batch of this product."""
    if filters.batch_id and not Batch.objects.filter(pk=filters.batch_id, product=product).exists():
        raise ValidationError({"batch": f"batch {filters.batch_id} is not a batch of this product"})
