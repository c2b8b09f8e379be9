"""The defect-type classifier of a product: the classification step of the pipeline, and the versions' lifecycle
(request training, train when enough new labels came in, promote, reject, roll back, re-classify, reap).
Training itself (fit, judge, compare) is training.py; tasks.py runs both in the worker."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, Max
from django.utils import timezone

from inspector import ml
from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.classifier.selectors import (
    classifier_active,
    confirmations_since_last_version,
    labelled_inspections,
    type_id_of,
)
from inspector.inspections.models import Inspection
from inspector.jobs import enqueue_on_commit
from inspector.products.models import DefectType, Product
from inspector.review.models import ClassifierVersion, ReviewEvent
from inspector.review.selectors import FLAGGED

RECLASSIFY_CHUNK = 500


# ------------------------------------------------------------------------------------------ classification


def classify_inspections(*, version: ClassifierVersion, inspections: list[Inspection]) -> int:
    """Predict the defect type of flagged images with `version`; each prediction is a history event."""
    rows = [i for i in inspections if i.embedding]
    if not rows:
        return 0
    preds = ml.classify([bytes(i.embedding) for i in rows], version_id=version.pk, payload_name=version.payload.name)
    live = {t.pk: t for t in DefectType.objects.filter(product_id=version.product_id).select_related("merged_into")}
    events = []
    still_active = Exists(ClassifierVersion.objects.filter(pk=version.pk, is_active=True))

    def current_name(name: str) -> str:
        type_id = type_id_of(version, name, live)
        return live[type_id].name if type_id is not None else name

    for inspection, pred in zip(rows, preds, strict=True):
        type_id = type_id_of(version, pred.best, live)
        best = live.get(type_id) if type_id is not None else None
        # Only while this version is the one in use: a promotion or rollback meanwhile wins.
        updated = Inspection.objects.filter(still_active, pk=inspection.pk).update(
            predicted_type=best,
            predicted_unknown=pred.label is None,
            predicted_confidence=pred.confidence,
            predicted_ranking=[[current_name(name), round(sim, 4)] for name, sim in pred.ranking],
            classifier_version=version,
        )
        if not updated:
            continue
        events.append(
            ReviewEvent(
                inspection=inspection,
                kind=ReviewEvent.Kind.PREDICTION,
                new_verdict=inspection.verdict,
                new_type="" if pred.label is None else (best.name if best else pred.best),
                new_type_ref=None if pred.label is None else best,
                confidence=pred.confidence,
                classifier_version=version.version,
            )
        )
    ReviewEvent.objects.bulk_create(events)
    return len(events)


def classify_new_inspection(*, inspection_id: int) -> None:
    """Pipeline step after detection: a flagged image gets the active classifier's prediction, if any."""
    inspection = Inspection.objects.select_related("batch").get(pk=inspection_id)
    version = classifier_active(product_id=inspection.batch.product_id)
    if version is not None and inspection.embedding:
        classify_inspections(version=version, inspections=[inspection])


# ------------------------------------------------------------------------------------------------ versions


def classifier_train_request(*, product: Product, user=None, trigger: str = "manual") -> ClassifierVersion:
    """Queue a new classifier version (or return the one already queued/training)."""
    from inspector.classifier.tasks import classifier_train_task

    with transaction.atomic():
        Product.objects.select_for_update().filter(pk=product.pk).first()
        busy = product.classifier_versions.filter(
            status__in=[ClassifierVersion.Status.QUEUED, ClassifierVersion.Status.TRAINING]
        ).first()
        if busy is not None:
            return busy
        if not labelled_inspections(product=product).exists():
            raise ValidationError("no confirmed defect types yet: review some flagged images first")
        version = (product.classifier_versions.aggregate(v=Max("version"))["v"] or 0) + 1
        cv = ClassifierVersion.objects.create(product=product, version=version, created_by=user, trigger=trigger)
        audit_record(
            action=Action.CLASSIFIER_TRAIN,
            team=product.team_id,
            actor=user,
            obj=cv,
            details={"product": product.pk, "version": version, "trigger": trigger},
        )
        enqueue_on_commit(classifier_train_task, [cv.pk])
    return cv


def classifier_train_if_due(*, product_id: int) -> ClassifierVersion | None:
    """Train automatically once the product has INSPECTOR_RETRAIN_EVERY new confirmed labels."""
    if confirmations_since_last_version(product_id=product_id) < settings.INSPECTOR_RETRAIN_EVERY:
        return None
    try:
        return classifier_train_request(product=Product.objects.get(pk=product_id), trigger="confirmations")
    except ValidationError:
        return None


def classifier_activate(*, cv: ClassifierVersion, decision: str = ClassifierVersion.Decision.PROMOTED) -> None:
    """Make `cv` the product's classifier (inside the caller's transaction) and re-classify on commit."""
    from inspector.classifier.tasks import reclassify_task

    # The product row is the lock: two activations at once (an automatic promotion and a lead's click) queue
    # up here instead of both clearing is_active and colliding on the one-active constraint.
    Product.objects.select_for_update().filter(pk=cv.product_id).first()
    ClassifierVersion.objects.filter(product_id=cv.product_id, is_active=True).exclude(pk=cv.pk).update(is_active=False)
    ClassifierVersion.objects.filter(pk=cv.pk).update(is_active=True, decision=decision, activated_at=timezone.now())
    enqueue_on_commit(reclassify_task, [cv.pk])


def classifier_promote(*, version: ClassifierVersion, user) -> None:
    """A lead puts a ready version in use (a held one, or an earlier one: that is the one-click rollback)."""
    if version.status != ClassifierVersion.Status.READY:
        raise ValidationError(f"version {version.version} is {version.status}, not ready")
    with transaction.atomic():
        previous = ClassifierVersion.objects.filter(product_id=version.product_id, is_active=True).first()
        rolling_back = previous is not None and previous.version > version.version
        if previous is not None and previous.pk != version.pk:
            ClassifierVersion.objects.filter(pk=previous.pk).update(
                decision=ClassifierVersion.Decision.ROLLED_BACK if rolling_back else previous.decision
            )
        who = user.get_username() if user else "system"
        ClassifierVersion.objects.filter(pk=version.pk).update(
            decision_reason=f"{'rolled back to' if rolling_back else 'promoted'} by {who}"
        )
        classifier_activate(cv=version)
        audit_record(
            action=Action.CLASSIFIER_ROLLBACK if rolling_back else Action.CLASSIFIER_PROMOTE,
            team=version.product.team_id,
            actor=user,
            obj=version,
            details={"product": version.product_id, "version": version.version}
            | {"previous": previous.version if previous else None},
        )


def classifier_rollback(*, product: Product, user) -> ClassifierVersion:
    """Back to the newest ready version older than the active one."""
    active = classifier_active(product_id=product.pk)
    if active is None:
        raise ValidationError("no classifier is active")
    earlier = (
        product.classifier_versions.filter(status=ClassifierVersion.Status.READY, version__lt=active.version)
        .exclude(payload="")
        .order_by("-version")
        .first()
    )
    if earlier is None:
        raise ValidationError(f"v{active.version} is the first version: nothing to roll back to")
    classifier_promote(version=earlier, user=user)
    return earlier


def classifier_reject(*, version: ClassifierVersion, user) -> None:
    if version.is_active:
        raise ValidationError("the active version cannot be rejected: promote or roll back to another first")
    with transaction.atomic():
        ClassifierVersion.objects.filter(pk=version.pk).update(
            decision=ClassifierVersion.Decision.REJECTED, decision_reason=f"rejected by {user.get_username()}"
        )
        audit_record(
            action=Action.CLASSIFIER_REJECT,
            team=version.product.team_id,
            actor=user,
            obj=version,
            details={"product": version.product_id, "version": version.version},
        )


def reclassify(*, version_id: int) -> int:
    """After a promotion: every unreviewed flagged image of the product gets the new version's prediction (the
    old one stays in its history). Stops if another version became active meanwhile."""
    cv = ClassifierVersion.objects.get(pk=version_id)
    done = 0
    last_id = 0
    while True:
        if not ClassifierVersion.objects.filter(pk=cv.pk, is_active=True).exists():
            break
        chunk = list(
            Inspection.objects.filter(
                batch__product_id=cv.product_id,
                embedding__isnull=False,
                reviewed_verdict="",
                verdict__in=FLAGGED,
                id__gt=last_id,
            ).order_by("id")[:RECLASSIFY_CHUNK]
        )
        if not chunk:
            break
        done += classify_inspections(version=cv, inspections=chunk)
        last_id = chunk[-1].pk
    return done


def classifier_reap(*, stale_running, stale_queued) -> dict[str, int]:
    """Called by the periodic reaper: a version whose worker was lost while training is failed with the reason
    (a lead can train again; it never blocks the product); one queued for long is sent again (the claim makes a
    duplicate harmless)."""
    from inspector.classifier.tasks import classifier_train_task

    lost = ClassifierVersion.objects.filter(status=ClassifierVersion.Status.TRAINING, started_at__lt=stale_running)
    failed = lost.update(
        status=ClassifierVersion.Status.FAILED,
        error="the worker was lost while training (killed, out of memory or past the time limit); train again",
        progress=100,
    )
    waiting = list(
        ClassifierVersion.objects.filter(
            status=ClassifierVersion.Status.QUEUED, created_at__lt=stale_queued
        ).values_list("pk", flat=True)
    )
    for pk in waiting:
        classifier_train_task.delay(pk)
    return {"classifiers_failed": failed, "classifiers_resent": len(waiting)}
