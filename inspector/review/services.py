"""The review loop's writes: leases, the next image to review, decisions with history and version checks, undo,
bulk decisions, and confirmed false alarms into a new support set. Defect types are in defect_types.py.

Every write that a reviewer makes goes through here; views and API are thin doors over these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product, SupportSet
from inspector.products.selectors import support_set_active
from inspector.products.services import support_set_from_images
from inspector.review import selectors
from inspector.review.defect_types import defect_type_current
from inspector.review.models import ReviewEvent
from inspector.review.selectors import FLAGGED, QueueFilters

VERDICTS = (Inspection.Verdict.GOOD, Inspection.Verdict.DEFECTIVE)


def _fresh(pk: int) -> Inspection:
    """Re-read an inspection. Not refresh_from_db(): on an ImageField with width/height fields that re-opens the
    stored image to measure it (a file read per call, and an error if storage is unreachable)."""
    return Inspection.objects.select_related("confirmed_type", "predicted_type", "reviewed_by", "lease_by").get(pk=pk)


class StaleReview(Exception):
    """The inspection changed since the reviewer loaded it: the edit is refused, nothing is overwritten."""

    def __init__(self, inspection: Inspection) -> None:
        who = inspection.reviewed_by.get_username() if inspection.reviewed_by else "someone"
        when = timezone.localtime(inspection.reviewed_at).strftime("%H:%M:%S") if inspection.reviewed_at else "?"
        super().__init__(
            f"{inspection.original_name} was changed by {who} at {when} since you opened it: "
            f"reload to see their decision (nothing was overwritten)"
        )
        self.inspection = inspection


# ------------------------------------------------------------------------------------------------ leases


def lease_take(*, inspection: Inspection, user) -> bool:
    """Hold the image for `user` for INSPECTOR_REVIEW_LEASE_SECONDS unless another reviewer holds it."""
    return _lease(inspection.pk, user)


def _lease(pk: int, user) -> bool:
    now = timezone.now()
    until = now + timedelta(seconds=settings.INSPECTOR_REVIEW_LEASE_SECONDS)
    free = Q(lease_by__isnull=True) | Q(lease_until__lt=now) | Q(lease_by=user)
    return bool(Inspection.objects.filter(free, pk=pk).update(lease_by=user, lease_until=until))


def lease_first(*, user, ids: list[int]) -> int | None:
    """Lease the first of `ids` the user can have (another reviewer may have taken some meanwhile)."""
    return next((pk for pk in ids if _lease(pk, user)), None)


def lease_release(*, user, inspection_id: int) -> None:
    Inspection.objects.filter(pk=inspection_id, lease_by=user).update(lease_by=None, lease_until=None)


CANDIDATES = 50  # images offered for a lease in one step (other reviewers may take some first)


def review_next(
    *,
    product: Product,
    filters: QueueFilters,
    user,
    current: Inspection | None = None,
    backwards: bool = False,
    wrap: bool = False,
) -> int | None:
    """Lease the next free image of the queue to `user` and return its id (None: no free image). Offered, nearest
    first (at most CANDIDATES): the free images after `current` in queue order (backwards: before it), then with
    `wrap` the rest from the queue's start; never `current` itself. Without `current`: the queue from its start
    (backwards: its end). The lease on `current` is left to the caller (release it, or keep it when none is free)."""
    free = selectors.queue_next(product=product, filters=filters, user=user)

    def ids(qs: QuerySet[Inspection]) -> list[int]:
        return list(qs.values_list("id", flat=True)[:CANDIDATES])

    if current is None:
        candidates = ids(free.reverse() if backwards else free)
    else:
        free = free.exclude(pk=current.pk)
        if backwards:
            near = ids(free.filter(selectors.before_q(current)).reverse())
        else:
            near = ids(free.filter(selectors.after_q(current)))
        candidates = near + [i for i in ids(free) if i not in near] if wrap else near
    return lease_first(user=user, ids=candidates)


# ----------------------------------------------------------------------------------- after a confirmed type

# Called with product_id= after the commit of every decision that confirms a defect type. The classifier sits a
# floor above review and trains itself when enough new labels came in; review must not import it, so the
# classifier app registers its "train when due" here (inspector.classifier.apps.ClassifierConfig.ready). An explicit
# list rather than a Django signal: one place to read who reacts to a decision, and nothing else is sent.
TYPE_CONFIRMED_HOOKS: list[Callable[..., object]] = []


def on_type_confirmed(hook: Callable[..., object]) -> None:
    """Register `hook(product_id=...)` to run after the commit of each decision that confirms a defect type."""
    if hook not in TYPE_CONFIRMED_HOOKS:
        TYPE_CONFIRMED_HOOKS.append(hook)


def _after_type_confirmed(*, product_id: int) -> None:
    for hook in TYPE_CONFIRMED_HOOKS:
        # robust: a failure to queue training must not turn a saved decision into an error for the reviewer
        transaction.on_commit(lambda hook=hook: hook(product_id=product_id), robust=True)


# ---------------------------------------------------------------------------------------------- decisions


def _machine(inspection: Inspection) -> dict:
    """What the machine said at the moment of a decision: verdict, the type it ranked first and whether that was
    too far to be trusted ("unknown type"), and the classifier version."""
    return {
        "machine_verdict": inspection.verdict,
        "machine_type": inspection.predicted_type.name if inspection.predicted_type else "",
        "machine_unknown": inspection.predicted_unknown,
        "machine_version": inspection.classifier_version.version if inspection.classifier_version else None,
    }


def review_decide(
    *, inspection_id: int, user, verdict: str, defect_type: DefectType | None = None, expected_version: int | None
) -> Inspection:
    """Record a reviewer's decision. expected_version: the review_version the reviewer saw (None: API callers
    that accept overwriting). Raises StaleReview when the image changed since. A decision that confirms a defect
    type runs the TYPE_CONFIRMED_HOOKS after its commit (the classifier's "train when due")."""
    if verdict not in VERDICTS:
        raise ValidationError({"verdict": f"verdict must be one of {[str(v) for v in VERDICTS]}"})
    if verdict == Inspection.Verdict.GOOD:
        defect_type = None
    with transaction.atomic():
        inspection = (
            Inspection.objects.select_for_update(of=("self",))
            .select_related(
                "batch__product", "confirmed_type", "predicted_type", "classifier_version", "reviewed_by"
            )
            .get(pk=inspection_id)
        )
        if inspection.status != Inspection.Status.DONE:
            raise ValidationError("only processed images can be reviewed")
        if defect_type is not None:
            if defect_type.product_id != inspection.batch.product_id:
                raise ValidationError({"defect_type": "that type belongs to another product"})
            if defect_type.merged_into_id:
                raise ValidationError({"defect_type": f"{defect_type.name!r} was merged into another type"})
        if expected_version is not None and inspection.review_version != expected_version:
            raise StaleReview(inspection)
        ReviewEvent.objects.create(
            inspection=inspection,
            kind=ReviewEvent.Kind.REVIEW,
            user=user,
            old_verdict=inspection.reviewed_verdict,
            new_verdict=verdict,
            old_type=inspection.confirmed_type.name if inspection.confirmed_type else "",
            old_type_ref=inspection.confirmed_type,
            new_type=defect_type.name if defect_type else "",
            new_type_ref=defect_type,
            **_machine(inspection),
        )
        now = timezone.now()
        Inspection.objects.filter(pk=inspection.pk).update(
            reviewed_verdict=verdict,
            confirmed_type=defect_type,
            reviewed_by=user,
            reviewed_at=now,
            review_version=F("review_version") + 1,
            lease_by=None,
            lease_until=None,
        )
        name = lambda t: t.name if t else ""  # noqa: E731
        audit_record(
            action=Action.REVIEW_DECISION,
            team=inspection.batch.product.team_id,
            actor=user,
            obj=inspection,
            details={
                "product": inspection.batch.product_id,
                "old": [inspection.reviewed_verdict, name(inspection.confirmed_type)],
                "new": [verdict, name(defect_type)],
                "machine": [inspection.verdict, name(inspection.predicted_type)],
            },
        )
        if defect_type is not None:
            _after_type_confirmed(product_id=inspection.batch.product_id)
    return _fresh(inspection.pk)


IN_FORCE = Q(kind__in=[ReviewEvent.Kind.REVIEW, ReviewEvent.Kind.MERGE], undone=False)
UNDO_LOOKBACK = 50


def review_undo(*, user, product: Product) -> Inspection | None:
    """Take back `user`'s newest decision on this product that is still in force: the image gets the values it
    had before (the undo is itself an event; the decision stays in the history, marked undone). A decision that
    someone changed since is skipped: it is no longer the image's state, and undoing it would overwrite theirs.
    None when there is nothing to undo."""
    with transaction.atomic():
        candidates = (
            ReviewEvent.objects.select_for_update(of=("self",))
            .filter(kind=ReviewEvent.Kind.REVIEW, undone=False, user=user, inspection__batch__product=product)
            .order_by("-id")[:UNDO_LOOKBACK]
        )
        event = next(
            (
                e
                for e in candidates
                if not ReviewEvent.objects.filter(IN_FORCE, inspection_id=e.inspection_id, id__gt=e.id).exists()
            ),
            None,
        )
        if event is None:
            return None
        inspection = Inspection.objects.select_for_update().get(pk=event.inspection_id)
        old_type = defect_type_current(event.old_type_ref)
        previous = (
            ReviewEvent.objects.filter(
                inspection=inspection, kind=ReviewEvent.Kind.REVIEW, undone=False, id__lt=event.id
            )
            .order_by("-id")
            .first()
        )
        ReviewEvent.objects.create(
            inspection=inspection,
            kind=ReviewEvent.Kind.UNDO,
            user=user,
            old_verdict=event.new_verdict,
            new_verdict=event.old_verdict,
            old_type=event.new_type,
            new_type=old_type.name if old_type else "",
            old_type_ref=event.new_type_ref,
            new_type_ref=old_type,
        )
        ReviewEvent.objects.filter(pk=event.pk).update(undone=True)
        audit_record(
            action=Action.REVIEW_UNDO,
            team=product.team_id,
            actor=user,
            obj=inspection,
            details={"product": product.pk, "undone": [event.new_verdict, event.new_type]}
            | {"back_to": [event.old_verdict, old_type.name if old_type else ""]},
        )
        Inspection.objects.filter(pk=inspection.pk).update(
            reviewed_verdict=event.old_verdict,
            confirmed_type=old_type,
            reviewed_by=previous.user if previous else None,
            reviewed_at=previous.created_at if previous else None,
            review_version=F("review_version") + 1,
            lease_by=user,
            lease_until=timezone.now() + timedelta(seconds=settings.INSPECTOR_REVIEW_LEASE_SECONDS),
        )
    return _fresh(inspection.pk)


@dataclass(frozen=True)
class BulkResult:
    done: list[int]
    stale: list[str]  # messages for the images that changed since they were shown


def review_bulk(
    *, user, product: Product, items: list[tuple[int, int | None]], verdict: str, defect_type: DefectType | None
) -> BulkResult:
    """The same decision for many images ((id, version shown) pairs); stale ones are skipped and reported."""
    allowed = set(
        Inspection.objects.filter(pk__in=[i for i, _ in items], batch__product=product).values_list("pk", flat=True)
    )
    done, stale = [], []
    for pk, version in items:
        if pk not in allowed:
            stale.append(f"image {pk} is not an image of this product")
            continue
        try:
            review_decide(
                inspection_id=pk, user=user, verdict=verdict, defect_type=defect_type, expected_version=version
            )
            done.append(pk)
        except StaleReview as exc:
            stale.append(str(exc))
        except ValidationError as exc:
            stale.append(f"image {pk}: {' '.join(exc.messages)}")
    return BulkResult(done, stale)


# ----------------------------------------------------------------------------------- false alarms to support


def false_alarms_to_support(*, product: Product, user) -> SupportSet:
    """A new support-set version: the active one's good images plus every confirmed false alarm (judged
    review/defective, confirmed good) not already in it. Fitting re-calibrates the thresholds; no training."""
    active = support_set_active(product=product)
    if active is None:
        raise ValidationError("this product has no ready support set")
    current = list(active.images.order_by("position"))
    have = {img.checksum for img in current}
    alarms = [
        i
        for i in Inspection.objects.filter(
            batch__product=product,
            reviewed_verdict=Inspection.Verdict.GOOD,
            verdict__in=FLAGGED,
        ).order_by("id")
        if i.checksum not in have
    ]
    if not alarms:
        raise ValidationError("no confirmed false alarm that is not already a good image")
    # Inspections and support images have the same stored-file fields: the helper takes either.
    return support_set_from_images(product=product, user=user, images=current + alarms, source="false alarms")
