"""Figures of the statistics dashboard and of its exports: one set of ORM reads for page, API and CSV.

The counting rules are RULES, written once: the page and the JSON summary show them word for word, and each one's
query stands right below them (DEFECT_Q, TYPE_ID, VERDICT_OVERRIDE_Q and TYPE_OVERRIDE_Q, _versions). The scope
(which images, which time) is inspector.stats.filters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import BigIntegerField, Case, Count, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import TruncDate, TruncWeek

from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product
from inspector.review.models import ClassifierVersion, ReviewEvent
from inspector.review.selectors import FLAGGED
from inspector.stats.filters import StatsFilters, bucket_starts, check_batch, inspections_in_scope, server_tz
from inspector.stats.rows import BucketRow, GroupRow, Override, ProductStats, TypeRow, VersionRow, pct

UNKNOWN = "unknown type"
UNKNOWN_COLOUR = "#7f7f7f"
GOOD = Inspection.Verdict.GOOD
DEFECTIVE = Inspection.Verdict.DEFECTIVE
_COLOUR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")  # anything else is shown grey
Names = dict[int | None, tuple[str, str]]  # type id (None: unknown type) -> (name, colour)

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

# The "defect" rule.
DEFECT_Q = Q(reviewed_verdict=DEFECTIVE) | Q(reviewed_verdict="", verdict__in=FLAGGED)
# The "type" rule: the id of a defect's type; NULL means "unknown type". (A reviewer who judged an image defective
# without choosing a type leaves the prediction in place.)
TYPE_ID = Case(
    When(confirmed_type__isnull=False, then=F("confirmed_type_id")),
    When(predicted_unknown=False, predicted_type__isnull=False, then=F("predicted_type_id")),
    default=Value(None),
    output_field=BigIntegerField(),
)
# The "override" rule, on the review event in force (_decisions_in_force), which records what the machine said at
# that moment: its verdict, machine_type (the type it ranked first) and machine_unknown.
VERDICT_OVERRIDE_Q = Q(new_verdict=GOOD, machine_verdict__in=FLAGGED) | Q(new_verdict=DEFECTIVE, machine_verdict=GOOD)
# A type decision overrides only a classifier that had spoken (machine_version set): labelling images before any
# classifier exists is teaching it, not correcting it.
TYPE_OVERRIDE_Q = (
    Q(new_verdict=DEFECTIVE)
    & ~Q(new_type="")
    & Q(machine_version__isnull=False)
    & (~Q(new_type=F("machine_type")) | Q(machine_unknown=True))
)


def _decisions_in_force(scope: QuerySet[Inspection]) -> QuerySet[ReviewEvent]:
    """The decision in force of every reviewed image in scope: its newest review event (decisions taken back are
    marked undone by the review service and skipped) whose new verdict is the image's current reviewed_verdict.
    Reviewed images without one (decided outside the review service) have none: they are counted apart."""
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
    """The classifier-accuracy rule per version. The type names compared are the ones recorded at the moment of
    the decision, so a later rename or merge changes nothing; the same closed-set accuracy that
    `python -m classification.cli.evaluate` reports. Each version's own leave-one-out figure is from its metrics."""
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


def _type_names(ids: set[int | None]) -> Names:
    names: Names = {None: (UNKNOWN, UNKNOWN_COLOUR)}
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


def _top(counts: dict[int | None, int], names: Names) -> tuple[str, int]:
    """The most frequent type of a group (ties: a known type before "unknown type", then by name)."""
    if not counts:
        return "", 0
    type_id = min(counts, key=lambda k: (-counts[k], k is None, names[k][0].lower()))
    return names[type_id][0], counts[type_id]


def _per_type(defects: QuerySet[Inspection]) -> dict[int | None, dict]:
    """Per type id: defects, how many reviewed (defective), how many with a confirmed type."""
    return {
        r["dtype"]: r
        for r in defects.values("dtype")
        .annotate(
            n=Count("id"),
            reviewed=Count("id", filter=Q(reviewed_verdict=DEFECTIVE)),
            confirmed=Count("id", filter=Q(confirmed_type__isnull=False)),
        )
        .order_by()
    }


def _type_rows(
    scope: QuerySet[Inspection], per_type: dict[int | None, dict], names: Names, inspected: int, defects: int
) -> list[TypeRow]:
    """One row per type, largest first; the classifier's accuracy per type is grouped by the image's current
    confirmed type."""
    accuracy = {
        r["inspection__confirmed_type_id"]: r
        for r in _confirmed_decisions(scope)
        .values("inspection__confirmed_type_id")
        .annotate(n=Count("id"), correct=Count("id", filter=Q(machine_type=F("new_type"))))
        .order_by()
    }
    rows = []
    for type_id, r in per_type.items():
        acc = accuracy.get(type_id, {"n": 0, "correct": 0}) if type_id is not None else {"n": 0, "correct": 0}
        name, colour = names[type_id]
        rows.append(
            TypeRow(
                type_id=type_id,
                name=name,
                colour=colour,
                count=r["n"],
                share_pct=pct(r["n"], defects),
                rate_pct=pct(r["n"], inspected),
                reviewed=r["reviewed"],
                confirmed=r["confirmed"],
                classifier_n=acc["n"],
                classifier_correct=acc["correct"],
                classifier_accuracy_pct=pct(acc["correct"], acc["n"]),
            )
        )
    return sorted(rows, key=lambda t: (-t.count, t.type_id is None, t.name.lower()))


def _bucket_rows(
    scope: QuerySet[Inspection], defects: QuerySet[Inspection], filters: StatsFilters, names: Names, order: list[str]
) -> list[BucketRow]:
    """Over time: every bucket of the range, empty ones included; per bucket the defects of every type in `order`."""
    per_bucket = {
        _as_date(r["b"]): r
        for r in scope.annotate(b=_trunc(filters.bucket))
        .values("b")
        .annotate(n=Count("id"), defects=Count("id", filter=DEFECT_Q))
        .order_by()
    }
    by_bucket_type: dict[date, dict[str, int]] = defaultdict(dict)
    per_bucket_type = defects.annotate(b=_trunc(filters.bucket)).values("b", "dtype").annotate(n=Count("id"))
    for r in per_bucket_type.order_by():
        by_bucket_type[_as_date(r["b"])][names[r["dtype"]][0]] = r["n"]
    if filters.date_from and filters.date_to:
        starts = bucket_starts(filters.date_from, filters.date_to, filters.bucket)
    elif per_bucket:
        starts = bucket_starts(min(per_bucket), max(per_bucket), filters.bucket)
    else:
        starts = []
    rows = []
    for start in starts:
        r = per_bucket.get(start, {"n": 0, "defects": 0})
        counts = by_bucket_type.get(start, {})
        rows.append(
            BucketRow(
                start=start,
                inspected=r["n"],
                defects=r["defects"],
                defect_rate_pct=pct(r["defects"], r["n"]),
                by_type={name: counts.get(name, 0) for name in order},
            )
        )
    return rows


@dataclass(frozen=True)
class _Grouping:
    """How the images are grouped for a table: by `fields`, also reading `extra`, rows in `order`."""

    fields: tuple[str, ...]
    extra: tuple[str, ...]
    order: tuple[str, ...]
    key: Callable[[dict], str]


LOTS = _Grouping(
    fields=("batch__lot", "batch__line"),
    extra=(),
    order=("batch__lot", "batch__line"),
    key=lambda r: f"{r['batch__lot'] or '—'} / {r['batch__line'] or '—'}",
)
BATCHES = _Grouping(
    fields=("batch_id",),
    extra=("batch__created_at", "batch__lot", "batch__line"),
    order=("-batch__created_at", "-batch_id"),
    key=lambda r: f"#{r['batch_id']}",
)


def _group_rows(
    scope: QuerySet[Inspection], defects: QuerySet[Inspection], names: Names, grouping: _Grouping
) -> list[GroupRow]:
    """Per lot/line or per batch: the same counts, and the most frequent type."""
    types_of: dict[tuple, dict[int | None, int]] = defaultdict(dict)
    for r in defects.values(*grouping.fields, "dtype").annotate(n=Count("id")).order_by():
        types_of[tuple(r[f] for f in grouping.fields)][r["dtype"]] = r["n"]
    counted = scope.values(*grouping.fields, *grouping.extra).annotate(
        n=Count("id"), defects=Count("id", filter=DEFECT_Q), reviewed=Count("id", filter=~Q(reviewed_verdict=""))
    )
    rows = []
    for r in counted.order_by(*grouping.order):
        top, top_n = _top(types_of.get(tuple(r[f] for f in grouping.fields), {}), names)
        rows.append(
            GroupRow(
                key=grouping.key(r),
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


def _verdict_mix(scope: QuerySet[Inspection]) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
    """(machine verdict -> images, review outcome -> images, machine verdict -> review outcome -> images)."""
    crosstab = {v: {"unreviewed": 0, "good": 0, "defective": 0} for v in Inspection.Verdict.values}
    for r in scope.values("verdict", "reviewed_verdict").annotate(n=Count("id")).order_by():
        crosstab.setdefault(r["verdict"], {"unreviewed": 0, "good": 0, "defective": 0})
        crosstab[r["verdict"]][r["reviewed_verdict"] or "unreviewed"] += r["n"]
    machine_mix = {v: sum(row.values()) for v, row in crosstab.items()}
    review_mix = {k: sum(row[k] for row in crosstab.values()) for k in ("unreviewed", "good", "defective")}
    return machine_mix, review_mix, crosstab


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
    per_type = _per_type(defects)
    names = _type_names(set(per_type))
    types = _type_rows(scope, per_type, names, inspected, n_defects)
    type_names = [t.name for t in types]
    machine_mix, review_mix, crosstab = _verdict_mix(scope)
    return ProductStats(
        product_id=product.pk,
        filters=filters,
        inspected=inspected,
        defects=n_defects,
        defect_rate_pct=pct(n_defects, inspected),
        reviewed=n_reviewed,
        types=types,
        buckets=_bucket_rows(scope, defects, filters, names, type_names),
        lots=_group_rows(scope, defects, names, LOTS),
        batches=_group_rows(scope, defects, names, BATCHES),
        machine_mix=machine_mix,
        review_mix=review_mix,
        crosstab=crosstab,
        override=_override(scope, n_reviewed),
        versions=_versions(product, scope),
        type_names=type_names,
    )
