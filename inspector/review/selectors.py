"""Read side of the review loop: the queue in the order a human adds most value, the image on screen, history."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Case, F, IntegerField, Max, Q, QuerySet, Value, When
from django.utils import timezone

from inspector.inspections.models import Batch, Inspection
from inspector.params import is_db_id
from inspector.products.models import DefectType, Product
from inspector.review.models import ReviewEvent

LOW_CONFIDENCE = 0.6  # below this the classifier's type is worth a human's look before the confident ones
# The machine's verdicts that send an image to a human. The one definition in the review wing (classifier and stats
# import it from here); Inspection.Verdict is to carry it once the inspections app offers it.
FLAGGED = Inspection.Verdict.FLAGGED
RECENT_BATCHES = 50  # batches offered in the queue's filter
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


@dataclass(frozen=True)
class QueueFilters:
    batch: int | None = None
    lot: str = ""
    defect_type: int | None = None  # predicted or confirmed
    verdict: str = ""  # the machine's verdict; empty = flagged (review + defective)
    reviewed: str = "no"  # no | yes | all

    @classmethod
    def from_query(cls, query) -> QueueFilters:
        def as_int(key: str) -> int | None:
            value = query.get(key, "")
            return int(value) if is_db_id(value) else None

        verdict = query.get("verdict", "")
        reviewed = query.get("reviewed", "no")
        return cls(
            batch=as_int("batch"),
            lot=query.get("lot", "").strip(),
            defect_type=as_int("type"),
            verdict=verdict if verdict in {"good", "review", "defective", "all"} else "",
            reviewed=reviewed if reviewed in {"no", "yes", "all"} else "no",
        )

    def as_query(self) -> dict[str, str]:
        out = {"reviewed": self.reviewed}
        if self.batch:
            out["batch"] = str(self.batch)
        if self.lot:
            out["lot"] = self.lot
        if self.defect_type:
            out["type"] = str(self.defect_type)
        if self.verdict:
            out["verdict"] = self.verdict
        return out


def queue(*, product: Product, filters: QueueFilters) -> QuerySet[Inspection]:
    """Processed images of the product, most useful to review first: verdict "review" and "unknown type", then
    low classifier confidence (lowest first), then the rest in upload order."""
    qs = Inspection.objects.filter(batch__product=product, status=Inspection.Status.DONE)
    if filters.verdict == "all":
        pass
    elif filters.verdict:
        qs = qs.filter(verdict=filters.verdict)
    else:
        qs = qs.filter(verdict__in=FLAGGED)
    if filters.batch:
        qs = qs.filter(batch_id=filters.batch)
    if filters.lot:
        qs = qs.filter(batch__lot=filters.lot)
    if filters.defect_type:
        qs = qs.filter(Q(predicted_type_id=filters.defect_type) | Q(confirmed_type_id=filters.defect_type))
    if filters.reviewed == "no":
        qs = qs.filter(reviewed_verdict="")
    elif filters.reviewed == "yes":
        qs = qs.exclude(reviewed_verdict="")
    priority = Case(
        When(Q(verdict=Inspection.Verdict.REVIEW) | Q(predicted_unknown=True), then=Value(0)),
        When(predicted_confidence__lt=LOW_CONFIDENCE, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return (
        qs.annotate(priority=priority)
        .select_related("batch", "predicted_type", "confirmed_type", "nearest_support", "reviewed_by")
        .order_by("priority", F("predicted_confidence").asc(nulls_first=True), "id")
    )


def queue_next(*, product: Product, filters: QueueFilters, user) -> QuerySet:
    """The queue without the images another reviewer holds."""
    now = timezone.now()
    qs = queue(product=product, filters=filters).exclude(Q(lease_until__gte=now) & ~Q(lease_by=user))
    return qs


def _priority(inspection: Inspection) -> int:
    """The queue priority of one image, as `queue` computes it in SQL."""
    if inspection.verdict == Inspection.Verdict.REVIEW or inspection.predicted_unknown:
        return 0
    if inspection.predicted_confidence is not None and inspection.predicted_confidence < LOW_CONFIDENCE:
        return 1
    return 2


def after_q(inspection: Inspection) -> Q:
    """Rows that come after `inspection` in queue order (priority, confidence nulls first, id): a keyset, so the
    next image is one indexed-range query instead of reading and sorting the whole queue."""
    p, c, pk = _priority(inspection), inspection.predicted_confidence, inspection.pk
    if c is None:
        same = Q(predicted_confidence__isnull=False) | Q(predicted_confidence__isnull=True, id__gt=pk)
    else:
        same = Q(predicted_confidence__gt=c) | Q(predicted_confidence=c, id__gt=pk)
    return Q(priority__gt=p) | (Q(priority=p) & same)


def before_q(inspection: Inspection) -> Q:
    """Rows that come before `inspection` in queue order."""
    p, c, pk = _priority(inspection), inspection.predicted_confidence, inspection.pk
    if c is None:
        same = Q(predicted_confidence__isnull=True, id__lt=pk)
    else:
        lower = Q(predicted_confidence__isnull=True) | Q(predicted_confidence__lt=c)
        same = lower | Q(predicted_confidence=c, id__lt=pk)
    return Q(priority__lt=p) | (Q(priority=p) & same)


def queue_position(*, product: Product, filters: QueueFilters, inspection: Inspection) -> tuple[int | None, int]:
    """(0-based index of the inspection in the queue or None, queue length): two COUNTs, nothing transferred."""
    qs = queue(product=product, filters=filters)
    total = qs.count()
    if not qs.filter(pk=inspection.pk).exists():
        return None, total
    return qs.filter(before_q(inspection)).count(), total


def history(*, inspection: Inspection) -> QuerySet[ReviewEvent]:
    return inspection.events.select_related("user").order_by("id")


def review_item(*, product: Product, inspection_id: int | None) -> Inspection | None:
    """The image of this product with everything the review screen shows of it; None when there is no such image."""
    if inspection_id is None:
        return None
    return Inspection.objects.select_related(*ITEM_RELATED).filter(pk=inspection_id, batch__product=product).first()


def defect_type_of_product(*, product: Product, type_id: int | None) -> DefectType | None:
    """A defect type of this product (merged ones included: the service says why they are refused)."""
    return product.defect_types.filter(pk=type_id).first() if type_id else None


def recent_batches(*, product: Product, limit: int = RECENT_BATCHES) -> QuerySet[Batch]:
    return product.batches.order_by("-created_at")[:limit]


def next_preload(*, product: Product, filters: QueueFilters, user, inspection: Inspection) -> list[str]:
    """The stored files (image, heatmap) of the image that probably comes next, for the browser to preload."""
    upcoming = (
        queue_next(product=product, filters=filters, user=user)
        .exclude(pk=inspection.pk)
        .values_list("image", "heatmap")
        .first()
    )
    return [name for name in (upcoming or ()) if name]


def unreviewed_in_queue(*, product: Product, filters: QueueFilters) -> tuple[int, int]:
    """(how many unreviewed images match the filters, the newest one's id or 0): what "all filtered" covers."""
    unreviewed = queue(product=product, filters=filters).filter(reviewed_verdict="")
    return unreviewed.count(), unreviewed.aggregate(m=Max("id"))["m"] or 0


def unreviewed_items(*, product: Product, filters: QueueFilters, max_id: int, limit: int) -> list[tuple[int, int]]:
    """(id, review_version) of up to `limit` unreviewed images matching the filters with id <= max_id."""
    qs = queue(product=product, filters=filters).filter(reviewed_verdict="", id__lte=max_id)
    return list(qs.values_list("id", "review_version")[:limit])
