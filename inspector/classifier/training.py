"""Training a classifier version: fit on the confirmed labels, judge it leave-one-out, compare it with the version
in use on the labels that one never saw, and promote it only if it is not worse (otherwise it waits for a lead)."""

from __future__ import annotations

import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from inspector import ml
from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.classifier.selectors import classifier_active, confirmed_examples, type_id_of
from inspector.classifier.services import classifier_activate
from inspector.inspections.models import Inspection
from inspector.jobs import Claim, Job, job_run
from inspector.products.models import DefectType, Product
from inspector.review.models import ClassifierVersion


def _accuracy(pairs: list[tuple[str, str]]) -> float | None:
    return round(100.0 * sum(t == p for t, p in pairs) / len(pairs), 2) if pairs else None


def _held_out_ids(ids: dict[str, list[int]]) -> list[int]:
    """Inspection ids in the order of classification.prototype.leave_one_out_predictions' output."""
    return [i for name in sorted(ids) if len(ids[name]) >= 2 for i in ids[name]]


def _version_metrics(result: ml.TrainResult, ids: dict[str, list[int]], pool_size: int) -> dict:
    types = result.types
    index = {t: k for k, t in enumerate(types)}
    confusion = [[0] * len(types) for _ in types]
    per_type: dict[str, list[int]] = {t: [0, 0] for t in types}
    for h in result.held_out:
        confusion[index[h.true]][index[h.best]] += 1
        per_type[h.true][0] += h.best == h.true
        per_type[h.true][1] += 1
    n = len(result.held_out)
    return {
        "types": types,
        "n_labels": sum(len(v) for v in ids.values()),
        "examples_per_type": {t: len(v) for t, v in ids.items()},
        "label_ids": sorted(i for v in ids.values() for i in v),
        "pool_size": pool_size,
        "loo_n": n,
        "loo_accuracy": _accuracy([(h.true, h.best) for h in result.held_out]),
        "loo_unknown_rate": round(100.0 * sum(h.label is None for h in result.held_out) / n, 2) if n else None,
        "per_type": {t: (round(100.0 * c / k, 2) if k else None) for t, (c, k) in per_type.items()},
        "confusion": confusion,
    }


def _compare(
    result: ml.TrainResult, ids: dict[str, list[int]], active: ClassifierVersion | None, metrics: dict
) -> tuple[bool, str]:
    """(promote?, why). Compared on the labels the active version never saw and the new one can hold out: the
    new version scored leave-one-out, the active one directly; both out of sample, on the same images, with the
    labels as they were when training started (a reviewer may change one meanwhile)."""
    if active is None:
        return True, "first classifier of this product"
    seen = set((active.metrics or {}).get("label_ids", []))
    held_ids = _held_out_ids(ids)
    new = {i: h for i, h in zip(held_ids, result.held_out, strict=True) if i not in seen}
    rows = list(Inspection.objects.filter(pk__in=list(new), embedding__isnull=False).order_by("id"))
    if not rows:
        return True, f"no new label to compare with v{active.version} on: promoted as not worse"
    live = {t.pk: t for t in DefectType.objects.filter(product_id=active.product_id).select_related("merged_into")}
    type_ids = metrics["type_ids"]
    preds = ml.classify([bytes(r.embedding) for r in rows], version_id=active.pk, payload_name=active.payload.name)
    truth = [type_ids[new[r.pk].true] for r in rows]
    active_acc = _accuracy([(t, type_id_of(active, p.best, live)) for t, p in zip(truth, preds, strict=True)])
    new_acc = _accuracy([(new[r.pk].true, new[r.pk].best) for r in rows])
    metrics["compared"] = {"n": len(rows), "new": new_acc, "active": active_acc, "active_version": active.version}
    verdict = f"v{active.version} on {len(rows)} labels it never saw: {new_acc} % vs {active_acc} %"
    if new_acc >= active_acc:
        return True, "not worse than " + verdict
    return False, "worse than " + verdict + "; waits for a lead"


TRAINING = Job(
    ClassifierVersion,
    name="classifier training",
    queued=ClassifierVersion.Status.QUEUED,
    running=ClassifierVersion.Status.TRAINING,
    failed=ClassifierVersion.Status.FAILED,
    on_claim={"progress": 10},
    on_release={"progress": 0},
    on_fail={"progress": 100},
    time_limit_reason="training took longer than INSPECTOR_FIT_TIME_LIMIT: train again with fewer examples",
)


def classifier_train(*, version_id: int) -> None:
    """Task body (the one job lifecycle of inspector.jobs: claim, release on transient trouble, fail with the
    reason): fit, judge by leave-one-out, compare with the active version on the same labels, then promote
    automatically only if not worse; otherwise hold for a lead."""
    job_run(TRAINING, pk=version_id, work=_train)


def _train(claim: Claim) -> None:
    cv = ClassifierVersion.objects.select_related("product").get(pk=claim.pk)
    active = classifier_active(product_id=cv.product_id)  # the version this one must not be worse than
    examples, ids, pool, type_ids = confirmed_examples(product=cv.product)
    if not examples:
        raise ValueError("no confirmed defect types to train on")
    claim.rows.update(progress=30)
    result = ml.train_classifier(examples, pool)
    claim.rows.update(progress=80)
    name = default_storage.save(
        f"classifiers/{cv.product_id}/v{cv.version}-{uuid.uuid4().hex}.pt", ContentFile(result.payload)
    )
    metrics = _version_metrics(result, ids, len(pool)) | {"type_ids": type_ids}
    promote, reason = _compare(result, ids, active, metrics)
    with transaction.atomic():
        Product.objects.select_for_update().filter(pk=cv.product_id).first()
        now_active = classifier_active(product_id=cv.product_id)
        if promote and getattr(now_active, "pk", None) != getattr(active, "pk", None):
            # A lead promoted or rolled back while this trained: their decision stands.
            promote = False
            reason = "the version in use changed while this one trained: waits for a lead"
        written = claim.rows.update(
            payload=name,
            metrics=metrics,
            method=result.method,
            method_reason=result.method_reason[:300],
            train_seconds=result.seconds,
            trained_at=timezone.now(),
            status=ClassifierVersion.Status.READY,
            decision=ClassifierVersion.Decision.HELD,
            decision_reason=reason[:500],
            progress=100,
        )
        if promote and written:
            classifier_activate(cv=cv)
            audit_record(
                action=Action.CLASSIFIER_PROMOTE,
                team=cv.product.team_id,
                actor=None,
                obj=cv,
                details={"product": cv.product_id, "version": cv.version, "automatic": True, "reason": reason},
            )
