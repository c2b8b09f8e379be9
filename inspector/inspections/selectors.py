from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, F, Max, Q, QuerySet
from django.http import Http404

from inspector.inspections.models import Batch, Inspection
from inspector.products.models import Role
from inspector.products.selectors import team_access_check

# Images without a score yet (queued, running, failed) sort last on every database.
SORTS = {
    "id": F("id").asc(),
    "score": F("score").asc(nulls_last=True),
    "-score": F("score").desc(nulls_last=True),
    "name": F("original_name").asc(),
}


@dataclass(frozen=True)
class BatchProgress:
    total: int
    processed: int  # done
    failed: int
    images_per_second: float | None
    duplicates: int = 0  # images the product had seen before (same sha256); inspected and counted all the same

    @property
    def finished(self) -> bool:
        return self.processed + self.failed >= self.total

    @property
    def percent(self) -> int:
        return round(100 * (self.processed + self.failed) / self.total) if self.total else 100


def batch_get_for_user(*, user, batch_id: int, role: str = Role.OPERATOR) -> Batch:
    """The batch, if the user is a member of its product's team with at least `role` (404 / 403 otherwise)."""
    batch = Batch.objects.select_related("product__team", "support_set").filter(pk=batch_id).first()
    if batch is None:
        raise Http404("no such batch")
    team_access_check(user=user, team_id=batch.product.team_id, role=role, what="batch")
    return batch


def inspection_get_for_user(*, user, inspection_id: int, role: str = Role.OPERATOR) -> Inspection:
    inspection = (
        Inspection.objects.select_related("batch__product__team", "support_set", "nearest_support")
        .filter(pk=inspection_id)
        .first()
    )
    if inspection is None:
        raise Http404("no such inspection")
    team_access_check(user=user, team_id=inspection.batch.product.team_id, role=role, what="inspection")
    return inspection


def batch_progress(*, batch: Batch) -> BatchProgress:
    agg = batch.inspections.aggregate(
        done=Count("id", filter=Q(status=Inspection.Status.DONE)),
        failed=Count("id", filter=Q(status=Inspection.Status.FAILED)),
        last=Max("finished_at"),
        duplicates=Count("id", filter=Q(duplicate_of__isnull=False)),
    )
    finished = agg["done"] + agg["failed"]
    rate = None
    if finished and agg["last"] is not None:
        seconds = (agg["last"] - batch.created_at).total_seconds()
        rate = finished / seconds if seconds > 0 else None
    return BatchProgress(batch.total, agg["done"], agg["failed"], rate, agg["duplicates"])


DUPLICATES_LISTED = 200


def batch_duplicates(*, batch: Batch) -> QuerySet[Inspection]:
    """The batch's images that the product had seen before, each with its earliest inspection (and batch)."""
    return (
        batch.inspections.filter(duplicate_of__isnull=False)
        .select_related("duplicate_of__batch")
        .order_by("id")[:DUPLICATES_LISTED]
    )


def batch_inspections(*, batch: Batch, verdict: str = "", status: str = "", sort: str = "id") -> QuerySet[Inspection]:
    qs = batch.inspections.all()
    if verdict:
        qs = qs.filter(verdict=verdict)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by(SORTS.get(sort, SORTS["id"]), "id")
