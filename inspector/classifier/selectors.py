"""Read side of the defect-type classifier: the version in use, the versions, and the labels it trains on."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import QuerySet

from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product
from inspector.review.defect_types import defect_type_current
from inspector.review.models import ClassifierVersion
from inspector.review.selectors import FLAGGED

POOL_LIMIT = 5000  # newest unlabelled flagged images used for the classifier's centre


def classifier_active(*, product_id: int) -> ClassifierVersion | None:
    return ClassifierVersion.objects.filter(product_id=product_id, is_active=True).first()


def classifier_versions(*, product: Product) -> QuerySet[ClassifierVersion]:
    return product.classifier_versions.order_by("-version")


def confirmations_since_last_version(*, product_id: int) -> int:
    last = ClassifierVersion.objects.filter(product_id=product_id).order_by("-version").first()
    qs = Inspection.objects.filter(batch__product_id=product_id, confirmed_type__isnull=False)
    if last is not None:
        qs = qs.filter(reviewed_at__gt=last.created_at)
    return qs.count()


def labelled_inspections(*, product: Product) -> QuerySet[Inspection]:
    """Images of the product reviewed defective with a confirmed (live) type and an embedding: the training labels."""
    return Inspection.objects.filter(
        batch__product=product,
        reviewed_verdict=Inspection.Verdict.DEFECTIVE,
        confirmed_type__isnull=False,
        confirmed_type__merged_into__isnull=True,
        embedding__isnull=False,
    )


def confirmed_examples(
    *, product: Product
) -> tuple[dict[str, list[bytes]], dict[str, list[int]], list[bytes], dict[str, int]]:
    """({type: embeddings of its confirmed images}, {type: their inspection ids}, the unlabelled flagged pool,
    {type name: type id}: the classes a version is trained on, by name, and what each name stood for then)."""
    examples: dict[str, list[bytes]] = defaultdict(list)
    ids: dict[str, list[int]] = defaultdict(list)
    type_ids: dict[str, int] = {}
    for i in labelled_inspections(product=product).select_related("confirmed_type").order_by("id"):
        examples[i.confirmed_type.name].append(bytes(i.embedding))
        ids[i.confirmed_type.name].append(i.pk)
        type_ids[i.confirmed_type.name] = i.confirmed_type_id
    pool = (
        Inspection.objects.filter(
            batch__product=product, embedding__isnull=False, reviewed_verdict="", verdict__in=FLAGGED
        )
        .order_by("-id")
        .values_list("embedding", flat=True)[:POOL_LIMIT]
    )
    return dict(examples), dict(ids), [bytes(e) for e in pool], type_ids


def type_id_of(version: ClassifierVersion, name: str, live: dict[int, DefectType]) -> int | None:
    """The live type a version's class name stands for: by the id recorded at training (a rename since changes
    nothing), following merges; versions without the record fall back to the current name."""
    type_id = (version.metrics or {}).get("type_ids", {}).get(name)
    if type_id is None:
        type_id = next((t.pk for t in live.values() if t.name == name and not t.merged_into_id), None)
    defect_type = defect_type_current(live.get(type_id)) if type_id is not None else None
    return defect_type.pk if defect_type is not None else None
