"""The figures of the statistics dashboard as plain rows (frozen dataclasses): what the page, the JSON summary and
the CSV exports are made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from inspector.stats.filters import StatsFilters


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
