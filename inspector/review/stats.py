"""Figures of the statistics dashboard and of its exports: one set of ORM reads for page, API and CSV.

The rules, word for word the ones the page shows (RULES):

- Scope: processed images (status "done") of the product. Time is the upload time of the image's batch
  (Batch.created_at), not the inspection's finished_at: every image of a batch lands in the same day/week, a
  queued or failed image has no finished_at, and the per-batch table adds up to the per-bucket table.
  `from`/`to` are inclusive days in the server's time zone (settings.TIME_ZONE); weeks start on Monday.
- Defect: an image counts as a defect when a reviewer judged it defective (reviewed_verdict "defective"), or,
  not reviewed yet, when the detector flagged it (verdict "defective" or "review"). An image a reviewer judged
  good is never a defect, whatever the detector said.
- Type of a defect: its confirmed type when a reviewer confirmed one; otherwise the classifier's predicted type
  unless the prediction was "unknown"; otherwise "unknown type". (A reviewer who judged an image defective
  without choosing a type leaves the prediction in place.)
- Override rate: among reviewed images, the decision in force is the newest event of kind "review" of the
  image whose new verdict is the image's current reviewed_verdict (decisions taken back are marked undone by the
  review service and skipped). It overrides the machine when the verdicts disagree (reviewer good vs machine review or
  defective; reviewer defective vs machine good) or when the reviewer chose a type that differs from the
  machine's type at that moment (machine_type, the type it ranked first; an "unknown type" prediction,
  machine_unknown, differs from any chosen type; a type chosen while no classifier had judged the image is no
  override). Reviewed images without such an event (made outside the
  review service) are left out and counted apart.
- Classifier accuracy on confirmed labels, per version v: among images in force reviewed defective with a
  confirmed type whose decision event recorded machine_version = v, the fraction whose machine_type (the type
  the classifier ranked first, also when it sent the image to a human as "unknown type") equals the type the
  reviewer confirmed (both names as they were at the moment of the decision, so a later rename or merge changes
  nothing). This is the closed-set accuracy that `python -m classification.evaluate` reports; how many of those
  images the classifier sent to a human as "unknown type" is counted beside it (unknown). Per type the same,
  grouped by the image's current confirmed type. n is reported too;
  each version's own leave-one-out figure comes from ClassifierVersion.metrics["loo_accuracy"].
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import BigIntegerField, Case, Count, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone

from inspector.inspections.models import Batch, Inspection
from inspector.products.models import DefectType, Product
from inspector.review.models import ClassifierVersion, ReviewEvent

UNKNOWN = "unknown type"
UNKNOWN_COLOUR = "#7f7f7f"
BUCKETS = ("day", "week")
DEFAULT_DAYS = 30  # without `from`, the dashboard shows the 30 days up to `to`
MAX_BUCKETS = 400  # one chart bar per bucket: beyond this it is unreadable (choose weeks or a shorter range)
TIME_BASIS = "batch upload time (Batch.created_at)"

FLAGGED = (Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE)
GOOD = Inspection.Verdict.GOOD
DEFECTIVE = Inspection.Verdict.DEFECTIVE

RULES = {
    "scope": (
        "Processed images of the product, dated by the upload time of their batch; from/to are inclusive days in "
        "the server's time zone; weeks start on Monday."
    ),
    "defect": (
        "A defect is an image a reviewer judged defective, or, not reviewed yet, an image the detector flagged "
        "(defective or review). An image a reviewer judged good is never a defect."
    ),
    "type": (
        "The type of a defect is its confirmed type when a reviewer confirmed one, else the classifier's predicted "
        "type unless the prediction was unknown, else 'unknown type'."
    ),
    "override": (
        "Among reviewed images, the review decision in force overrides the machine when the verdicts disagree "
        "(good vs review/defective) or when the reviewer chose a type other than the machine's type at that moment "
        "(an 'unknown type' prediction differs from any chosen type; choosing a type for an image no classifier "
        "had judged yet is not an override)."
    ),
    "classifier_accuracy": (
        "Per classifier version: among images reviewed defective with a confirmed type whose decision recorded "
        "that version's prediction, the share where the type the classifier ranked first equals the confirmed type "
        "(closed-set, as the offline evaluator measures it); how many of them it sent to a human as 'unknown type' "
        "is shown beside it."
    ),
}

# An image is a defect (see the module docstring).
DEFECT_Q = Q(reviewed_verdict=DEFECTIVE) | Q(reviewed_verdict="", verdict__in=FLAGGED)
# The id of a defect's type; NULL means "unknown type".
TYPE_ID = Case(
    When(confirmed_type__isnull=False, then=F("confirmed_type_id")),
    When(predicted_unknown=False, predicted_type__isnull=False, then=F("predicted_type_id")),
    default=Value(None),
    output_field=BigIntegerField(),
)
# Review decisions in force that overrode the machine.
VERDICT_OVERRIDE_Q = Q(new_verdict=GOOD, machine_verdict__in=FLAGGED) | Q(new_verdict=DEFECTIVE, machine_verdict=GOOD)
# A type decision overrides only a classifier that had spoken (machine_version set): labelling images before any
# classifier exists is teaching it, not correcting it.
TYPE_OVERRIDE_Q = (
    Q(new_verdict=DEFECTIVE)
    & ~Q(new_type="")
    & Q(machine_version__isnull=False)
    & (~Q(new_type=F("machine_type")) | Q(machine_unknown=True))
)

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_COLOUR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")  # anything else is shown grey


# --------------------------------------------------------------------------------------------------- filters


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


def _parse_date(query: Mapping, key: str, errors: dict[str, str]) -> date | None:
    value = (query.get(key) or "").strip()
    if not value:
        return None
    if _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors[key] = f"{key}={value[:40]!r} is not a date: use YYYY-MM-DD (e.g. 2025-03-31)"
    return None


def filters_from_query(query: Mapping) -> StatsFilters:
    """Filters from `from`, `to`, `bucket`, `batch`. Without dates: the 30 days up to today, or, when a batch
    is chosen, no date limit (the whole batch). Raises ValidationError with one message per bad parameter."""
    errors: dict[str, str] = {}
    date_from = _parse_date(query, "from", errors)
    date_to = _parse_date(query, "to", errors)
    bucket = (query.get("bucket") or "day").strip()
    if bucket not in BUCKETS:
        errors["bucket"] = f"bucket must be one of {', '.join(BUCKETS)}"
    raw_batch = (query.get("batch") or "").strip()
    batch_id = None
    if raw_batch:
        if raw_batch.isdigit() and int(raw_batch) > 0:
            batch_id = int(raw_batch)
        else:
            errors["batch"] = f"batch={raw_batch[:40]!r} is not a batch number"
    if errors:
        raise ValidationError(errors)
    if not (date_from or date_to or batch_id):
        date_to = today()
    if date_to and not date_from and not batch_id:
        date_from = date_to - timedelta(days=DEFAULT_DAYS - 1)
    if date_from and date_to and date_from > date_to:
        raise ValidationError({"from": f"from ({date_from}) is after to ({date_to})"})
    if date_from and date_to and len(_bucket_starts(date_from, date_to, bucket)) > MAX_BUCKETS:
        raise ValidationError(
            {"to": f"at most {MAX_BUCKETS} {bucket}s in one view: choose a shorter range or weekly buckets"}
        )
    return StatsFilters(date_from=date_from, date_to=date_to, bucket=bucket, batch_id=batch_id)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=server_tz())


def _bucket_of(day: date, bucket: str) -> date:
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def _bucket_starts(first: date, last: date, bucket: str) -> list[date]:
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


# ---------------------------------------------------------------------------------------------- the figures


def pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


@dataclass(frozen=True)
class TypeRow:
    type_id: int | None  # None: unknown type
    name: str
    colour: str
    count: int  # defects of this type
    share_pct: float | None  # of all defects
    rate_pct: float | None  # of all inspected images
    reviewed: int  # of these defects, how many a reviewer judged (defective)
    confirmed: int  # of these, how many carry a confirmed type
    classifier_n: int  # confirmed images whose decision recorded a classifier prediction
    classifier_correct: int
    classifier_accuracy_pct: float | None


@dataclass(frozen=True)
class BucketRow:
    start: date
    inspected: int
    defects: int
    defect_rate_pct: float | None
    by_type: dict[str, int]  # type name -> defects; every type of the view (Pareto order), zeros included

    @property
    def by_type_rate_pct(self) -> dict[str, float | None]:
        """type name -> its defects as a share of the images inspected in this bucket."""
        return {name: pct(n, self.inspected) for name, n in self.by_type.items()}

    @property
    def cells(self) -> list[tuple[str, int, float | None]]:
        return [(name, n, pct(n, self.inspected)) for name, n in self.by_type.items()]


@dataclass(frozen=True)
class GroupRow:
    """A lot/line or a batch."""

    key: str
    inspected: int
    defects: int
    defect_rate_pct: float | None
    reviewed: int
    top_type: str
    top_type_count: int
    batch_id: int | None = None
    created_at: datetime | None = None
    lot: str = ""
    line: str = ""


@dataclass(frozen=True)
class Override:
    reviewed: int  # reviewed images in scope
    decisions: int  # of those, with a review event in force (the base of the rate)
    without_event: int
    verdict_overrides: int
    type_overrides: int  # same verdict, other type
    overrides: int
    rate_pct: float | None


@dataclass(frozen=True)
class VersionRow:
    version: int
    status: str
    decision: str
    is_active: bool
    loo_accuracy: float | None
    loo_n: int | None
    n: int
    correct: int
    accuracy_pct: float | None
    unknown: int  # of the n, sent to a human as "unknown type"


@dataclass(frozen=True)
class ProductStats:
    product_id: int
    filters: StatsFilters
    inspected: int
    defects: int
    defect_rate_pct: float | None
    reviewed: int
    types: list[TypeRow]  # by count, largest first (the Pareto order)
    buckets: list[BucketRow]
    lots: list[GroupRow]
    batches: list[GroupRow]
    machine_mix: dict[str, int]  # machine verdict -> images
    review_mix: dict[str, int]  # unreviewed / good / defective -> images
    crosstab: dict[str, dict[str, int]]  # machine verdict -> review outcome -> images
    override: Override
    versions: list[VersionRow]
    type_names: list[str] = field(default_factory=list)  # in the order of `types`


def _decisions_in_force(scope: QuerySet[Inspection]) -> QuerySet[ReviewEvent]:
    """The newest review event of every reviewed image in scope, when it is the one in force."""
    newest = (
        ReviewEvent.objects.filter(inspection=OuterRef("pk"), kind=ReviewEvent.Kind.REVIEW, undone=False)
        .order_by("-id")
        .values("id")
    )
    ids = scope.exclude(reviewed_verdict="").annotate(event_id=Subquery(newest[:1])).values("event_id")
    return ReviewEvent.objects.filter(pk__in=ids, new_verdict=F("inspection__reviewed_verdict"))


def _override(scope: QuerySet[Inspection], reviewed: int) -> Override:
    agg = _decisions_in_force(scope).aggregate(
        n=Count("id"),
        verdict=Count("id", filter=VERDICT_OVERRIDE_Q),
        type=Count("id", filter=TYPE_OVERRIDE_Q & ~VERDICT_OVERRIDE_Q),
        any=Count("id", filter=VERDICT_OVERRIDE_Q | TYPE_OVERRIDE_Q),
    )
    return Override(
        reviewed=reviewed,
        decisions=agg["n"],
        without_event=reviewed - agg["n"],
        verdict_overrides=agg["verdict"],
        type_overrides=agg["type"],
        overrides=agg["any"],
        rate_pct=pct(agg["any"], agg["n"]),
    )


def _confirmed_decisions(scope: QuerySet[Inspection]) -> QuerySet[ReviewEvent]:
    """Decisions in force that confirmed a type on an image the classifier had judged."""
    return (
        _decisions_in_force(scope)
        .filter(
            new_verdict=DEFECTIVE,
            inspection__confirmed_type__isnull=False,
            machine_version__isnull=False,
        )
        .exclude(new_type="")
    )


def _versions(product: Product, scope: QuerySet[Inspection]) -> list[VersionRow]:
    measured = {
        r["machine_version"]: r
        for r in _confirmed_decisions(scope)
        .values("machine_version")
        .annotate(
            n=Count("id"),
            correct=Count("id", filter=Q(machine_type=F("new_type"))),
            unknown=Count("id", filter=Q(machine_unknown=True)),
        )
        .order_by()
    }
    rows = []
    known = ClassifierVersion.objects.filter(product=product).order_by("version")
    for cv in known:
        m = measured.pop(cv.version, {"n": 0, "correct": 0, "unknown": 0})
        metrics = cv.metrics or {}
        rows.append(
            VersionRow(
                version=cv.version,
                status=cv.status,
                decision=cv.decision,
                is_active=cv.is_active,
                loo_accuracy=metrics.get("loo_accuracy"),
                loo_n=metrics.get("loo_n"),
                n=m["n"],
                correct=m["correct"],
                accuracy_pct=pct(m["correct"], m["n"]),
                unknown=m["unknown"],
            )
        )
    for version, m in sorted(measured.items()):  # a version that no longer exists: its decisions still count
        rows.append(
            VersionRow(
                version, "deleted", "", False, None, None, m["n"], m["correct"], pct(m["correct"], m["n"]), m["unknown"]
            )
        )
    return sorted(rows, key=lambda r: r.version)


def _type_names(ids: set[int | None]) -> dict[int | None, tuple[str, str]]:
    names: dict[int | None, tuple[str, str]] = {None: (UNKNOWN, UNKNOWN_COLOUR)}
    for t in DefectType.objects.filter(pk__in=[i for i in ids if i is not None]):
        names[t.pk] = (t.name, t.colour if _COLOUR_RE.fullmatch(t.colour or "") else UNKNOWN_COLOUR)
    return names


def _trunc(bucket: str):
    tz = server_tz()
    if bucket == "week":
        return TruncWeek("batch__created_at", tzinfo=tz)
    return TruncDate("batch__created_at", tzinfo=tz)


def _as_date(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def _top(counts: dict[int | None, int], names: dict[int | None, tuple[str, str]]) -> tuple[str, int]:
    """The most frequent type of a group (ties: a known type before "unknown type", then by name)."""
    if not counts:
        return "", 0
    type_id = min(counts, key=lambda k: (-counts[k], k is None, names[k][0].lower()))
    return names[type_id][0], counts[type_id]


def product_stats(*, product: Product, filters: StatsFilters) -> ProductStats:
    """Every figure of the dashboard (and of the summary export) for the product within the filters."""
    check_batch(product=product, filters=filters)
    scope = inspections_in_scope(product=product, filters=filters)
    defects = scope.filter(DEFECT_Q).annotate(dtype=TYPE_ID)

    totals = scope.aggregate(
        inspected=Count("id"),
        defects=Count("id", filter=DEFECT_Q),
        reviewed=Count("id", filter=~Q(reviewed_verdict="")),
    )
    inspected, n_defects, n_reviewed = totals["inspected"], totals["defects"], totals["reviewed"]

    # Per type: counts, reviewed, confirmed.
    per_type = {
        r["dtype"]: r
        for r in defects.values("dtype")
        .annotate(
            n=Count("id"),
            reviewed=Count("id", filter=Q(reviewed_verdict=DEFECTIVE)),
            confirmed=Count("id", filter=Q(confirmed_type__isnull=False)),
        )
        .order_by()
    }
    # Per type: the classifier on the labels confirmed as that type.
    accuracy = {
        r["inspection__confirmed_type_id"]: r
        for r in _confirmed_decisions(scope)
        .values("inspection__confirmed_type_id")
        .annotate(n=Count("id"), correct=Count("id", filter=Q(machine_type=F("new_type"))))
        .order_by()
    }
    per_bucket_type = list(
        defects.annotate(b=_trunc(filters.bucket)).values("b", "dtype").annotate(n=Count("id")).order_by()
    )
    per_lot_type = list(defects.values("batch__lot", "batch__line", "dtype").annotate(n=Count("id")).order_by())
    per_batch_type = list(defects.values("batch_id", "dtype").annotate(n=Count("id")).order_by())

    names = _type_names(set(per_type))
    types = []
    for type_id, r in per_type.items():
        acc = accuracy.get(type_id, {"n": 0, "correct": 0}) if type_id is not None else {"n": 0, "correct": 0}
        name, colour = names[type_id]
        types.append(
            TypeRow(
                type_id=type_id,
                name=name,
                colour=colour,
                count=r["n"],
                share_pct=pct(r["n"], n_defects),
                rate_pct=pct(r["n"], inspected),
                reviewed=r["reviewed"],
                confirmed=r["confirmed"],
                classifier_n=acc["n"],
                classifier_correct=acc["correct"],
                classifier_accuracy_pct=pct(acc["correct"], acc["n"]),
            )
        )
    types.sort(key=lambda t: (-t.count, t.type_id is None, t.name.lower()))
    type_names = [t.name for t in types]

    # Over time: every bucket of the range, empty ones included.
    per_bucket = {
        _as_date(r["b"]): r
        for r in scope.annotate(b=_trunc(filters.bucket))
        .values("b")
        .annotate(n=Count("id"), defects=Count("id", filter=DEFECT_Q))
        .order_by()
    }
    by_bucket_type: dict[date, dict[str, int]] = defaultdict(dict)
    for r in per_bucket_type:
        by_bucket_type[_as_date(r["b"])][names[r["dtype"]][0]] = r["n"]
    if filters.date_from and filters.date_to:
        starts = _bucket_starts(filters.date_from, filters.date_to, filters.bucket)
    elif per_bucket:
        starts = _bucket_starts(min(per_bucket), max(per_bucket), filters.bucket)
    else:
        starts = []
    buckets = []
    for start in starts:
        r = per_bucket.get(start, {"n": 0, "defects": 0})
        counts = by_bucket_type.get(start, {})
        buckets.append(
            BucketRow(
                start=start,
                inspected=r["n"],
                defects=r["defects"],
                defect_rate_pct=pct(r["defects"], r["n"]),
                by_type={name: counts.get(name, 0) for name in type_names},
            )
        )

    # Per lot/line and per batch: the same counts and most frequent type, grouped two ways.
    def groups(
        fields: tuple[str, ...], extra: tuple[str, ...], per_type: list[dict], order: tuple[str, ...], key_text
    ) -> list[GroupRow]:
        types_of: dict[tuple, dict[int | None, int]] = defaultdict(dict)
        for r in per_type:
            types_of[tuple(r[f] for f in fields)][r["dtype"]] = r["n"]
        rows = []
        counted = scope.values(*fields, *extra).annotate(
            n=Count("id"), defects=Count("id", filter=DEFECT_Q), reviewed=Count("id", filter=~Q(reviewed_verdict=""))
        )
        for r in counted.order_by(*order):
            top, top_n = _top(types_of.get(tuple(r[f] for f in fields), {}), names)
            rows.append(
                GroupRow(
                    key=key_text(r),
                    inspected=r["n"],
                    defects=r["defects"],
                    defect_rate_pct=pct(r["defects"], r["n"]),
                    reviewed=r["reviewed"],
                    top_type=top,
                    top_type_count=top_n,
                    batch_id=r.get("batch_id"),
                    created_at=r.get("batch__created_at"),
                    lot=r["batch__lot"],
                    line=r["batch__line"],
                )
            )
        return rows

    lots = groups(
        ("batch__lot", "batch__line"),
        (),
        per_lot_type,
        ("batch__lot", "batch__line"),
        lambda r: f"{r['batch__lot'] or '—'} / {r['batch__line'] or '—'}",
    )
    batches = groups(
        ("batch_id",),
        ("batch__created_at", "batch__lot", "batch__line"),
        per_batch_type,
        ("-batch__created_at", "-batch_id"),
        lambda r: f"#{r['batch_id']}",
    )

    # Verdict mix: the machine's verdicts, and what review made of them.
    crosstab = {v: {"unreviewed": 0, "good": 0, "defective": 0} for v in Inspection.Verdict.values}
    for r in scope.values("verdict", "reviewed_verdict").annotate(n=Count("id")).order_by():
        crosstab.setdefault(r["verdict"], {"unreviewed": 0, "good": 0, "defective": 0})
        crosstab[r["verdict"]][r["reviewed_verdict"] or "unreviewed"] += r["n"]
    machine_mix = {v: sum(row.values()) for v, row in crosstab.items()}
    review_mix = {k: sum(row[k] for row in crosstab.values()) for k in ("unreviewed", "good", "defective")}

    return ProductStats(
        product_id=product.pk,
        filters=filters,
        inspected=inspected,
        defects=n_defects,
        defect_rate_pct=pct(n_defects, inspected),
        reviewed=n_reviewed,
        types=types,
        buckets=buckets,
        lots=lots,
        batches=batches,
        machine_mix=machine_mix,
        review_mix=review_mix,
        crosstab=crosstab,
        override=_override(scope, n_reviewed),
        versions=_versions(product, scope),
        type_names=type_names,
    )


# ------------------------------------------------------------------------------------- export-ready shapes

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


def summary_rows(stats: ProductStats) -> list[dict]:
    """The per-type summary, one dict per type with SUMMARY_COLUMNS: the table of the page and of the exports."""
    return [
        {
            "type": t.name,
            "count": t.count,
            "share_pct": t.share_pct,
            "rate_pct": t.rate_pct,
            "reviewed": t.reviewed,
            "confirmed": t.confirmed,
            "classifier_n": t.classifier_n,
            "classifier_correct": t.classifier_correct,
            "classifier_accuracy_pct": t.classifier_accuracy_pct,
        }
        for t in stats.types
    ]


def _iso(value: datetime | None) -> str | None:
    return timezone.localtime(value, server_tz()).isoformat(timespec="seconds") if value else None


def stats_as_dict(stats: ProductStats) -> dict:
    """Everything the dashboard shows, JSON-ready (the API's JSON summary)."""
    f = stats.filters
    return {
        "product": stats.product_id,
        "filters": {
            "from": f.date_from.isoformat() if f.date_from else None,
            "to": f.date_to.isoformat() if f.date_to else None,
            "bucket": f.bucket,
            "batch": f.batch_id,
            "time_basis": TIME_BASIS,
            "time_zone": settings.TIME_ZONE,
        },
        "rules": RULES,
        "totals": {
            "inspected": stats.inspected,
            "defects": stats.defects,
            "defect_rate_pct": stats.defect_rate_pct,
            "reviewed": stats.reviewed,
        },
        "types": summary_rows(stats),
        "series": [
            {
                "start": b.start.isoformat(),
                "inspected": b.inspected,
                "defects": b.defects,
                "defect_rate_pct": b.defect_rate_pct,
                "by_type": b.by_type,
                "by_type_rate_pct": b.by_type_rate_pct,
            }
            for b in stats.buckets
        ],
        "verdict_mix": {"machine": stats.machine_mix, "reviewed": stats.review_mix, "crosstab": stats.crosstab},
        "override": {
            "reviewed": stats.override.reviewed,
            "decisions": stats.override.decisions,
            "without_event": stats.override.without_event,
            "verdict_overrides": stats.override.verdict_overrides,
            "type_overrides": stats.override.type_overrides,
            "overrides": stats.override.overrides,
            "rate_pct": stats.override.rate_pct,
        },
        "classifier_versions": [
            {
                "version": v.version,
                "status": v.status,
                "decision": v.decision,
                "is_active": v.is_active,
                "loo_accuracy": v.loo_accuracy,
                "loo_n": v.loo_n,
                "n": v.n,
                "correct": v.correct,
                "accuracy_pct": v.accuracy_pct,
                "unknown": v.unknown,
            }
            for v in stats.versions
        ],
        "lots": [
            {
                "lot": g.lot,
                "line": g.line,
                "inspected": g.inspected,
                "defects": g.defects,
                "defect_rate_pct": g.defect_rate_pct,
                "reviewed": g.reviewed,
                "top_type": g.top_type,
            }
            for g in stats.lots
        ],
        "batches": [
            {
                "batch": g.batch_id,
                "created_at": _iso(g.created_at),
                "lot": g.lot,
                "line": g.line,
                "inspected": g.inspected,
                "defects": g.defects,
                "defect_rate_pct": g.defect_rate_pct,
                "reviewed": g.reviewed,
                "top_type": g.top_type,
            }
            for g in stats.batches
        ],
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
