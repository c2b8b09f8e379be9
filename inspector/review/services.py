"""The review loop: decisions with history and version checks, leases, defect types, classifier versions.

Every write that a reviewer makes goes through here; views and API are thin doors over these functions.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Exists, F, Max, Q
from django.utils import timezone

from inspector import ml
from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product, SupportSet
from inspector.products.services import enqueue_on_commit, support_set_from_images
from inspector.review.models import ClassifierVersion, ReviewEvent

log = logging.getLogger(__name__)

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
VERDICTS = (Inspection.Verdict.GOOD, Inspection.Verdict.DEFECTIVE)
FLAGGED = (Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE)
POOL_LIMIT = 5000  # newest unlabelled flagged images used for the classifier's centre


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


# ------------------------------------------------------------------------------------------- defect types


COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "a defect type needs a name"})
    if len(name) > 100:
        raise ValidationError({"name": "at most 100 characters"})
    return name


def _check_colour(colour: str) -> str:
    if not COLOUR_RE.match(colour or ""):
        raise ValidationError({"colour": "a colour is #rrggbb"})
    return colour


def _check_shortcut(product: Product, shortcut: str, exclude: int | None = None) -> str:
    shortcut = (shortcut or "").strip()
    if not shortcut:
        return ""
    if len(shortcut) != 1 or shortcut not in "123456789":
        raise ValidationError({"shortcut": "a shortcut is one digit 1-9 (G, N, H and the arrows are taken)"})
    clash = product.defect_types.filter(shortcut=shortcut, merged_into__isnull=True).exclude(pk=exclude)
    if clash.exists():
        raise ValidationError({"shortcut": f"key {shortcut} is already {clash.first().name!r}"})
    return shortcut


def defect_type_create(
    *, product: Product, name: str, colour: str = "", shortcut: str = "", description: str = ""
) -> DefectType:
    """A new defect type; without a shortcut it gets the first free key 1..9, without a colour one of a palette."""
    name = _check_name(name)
    if colour:
        _check_colour(colour)
    with transaction.atomic():
        Product.objects.select_for_update().filter(pk=product.pk).first()  # serialise shortcut assignment
        live = product.defect_types.filter(merged_into__isnull=True)
        if shortcut:
            shortcut = _check_shortcut(product, shortcut)
        else:
            used = set(live.values_list("shortcut", flat=True))
            shortcut = next((k for k in "123456789" if k not in used), "")
        colour = colour or PALETTE[live.count() % len(PALETTE)]
        try:
            with transaction.atomic():
                created = DefectType.objects.create(
                    product=product, name=name, colour=colour, shortcut=shortcut, description=description
                )
        except IntegrityError:
            raise ValidationError({"name": f"this product already has a defect type named {name!r}"}) from None
        audit_record(
            action=Action.DEFECT_TYPE_CREATE,
            team=product.team_id,
            obj=created,
            details={"product": product.pk, "name": name, "shortcut": shortcut, "colour": colour},
        )
    return created


def defect_type_update(
    *,
    defect_type: DefectType,
    name: str | None = None,
    colour: str | None = None,
    shortcut: str | None = None,
    description: str | None = None,
) -> DefectType:
    """Rename or restyle. History keeps the old name (events copy names as they were)."""
    if defect_type.merged_into_id:
        raise ValidationError("this type was merged into another one and can no longer be edited")
    fields = ("name", "colour", "shortcut", "description")
    before = {f: getattr(defect_type, f) for f in fields}
    if name is not None:
        name = _check_name(name)
        defect_type.name = name
    if colour is not None:
        defect_type.colour = _check_colour(colour)
    if shortcut is not None:
        defect_type.shortcut = _check_shortcut(defect_type.product, shortcut, exclude=defect_type.pk)
    if description is not None:
        defect_type.description = description
    changed = {f: [before[f], getattr(defect_type, f)] for f in fields if getattr(defect_type, f) != before[f]}
    try:
        with transaction.atomic():
            defect_type.save()
            if changed:
                audit_record(
                    action=Action.DEFECT_TYPE_UPDATE,
                    team=defect_type.product.team_id,
                    obj=defect_type,
                    details={"product": defect_type.product_id, "changed": changed},
                )
    except IntegrityError:
        raise ValidationError({"name": f"this product already has a defect type named {name!r}"}) from None
    return defect_type


def defect_type_merge(*, source: DefectType, target: DefectType, user) -> int:
    """Move every image of `source` to `target` (one history event per image); `source` stays, hidden."""
    if source.product_id != target.product_id or source.pk == target.pk:
        raise ValidationError("merge two different types of the same product")
    with transaction.atomic():
        # Both rows locked in a fixed order and re-read: two merges at once (A->B with B->C, or A->B with B->A)
        # run one after the other, and the second sees the first.
        locked = {t.pk: t for t in DefectType.objects.select_for_update().filter(pk__in=[source.pk, target.pk])}
        source, target = locked[source.pk], locked[target.pk]
        if source.merged_into_id or target.merged_into_id:
            raise ValidationError("one of these types was already merged")
        moved = list(Inspection.objects.select_for_update().filter(confirmed_type=source))
        ReviewEvent.objects.bulk_create(
            ReviewEvent(
                inspection=i,
                kind=ReviewEvent.Kind.MERGE,
                user=user,
                old_verdict=i.reviewed_verdict,
                new_verdict=i.reviewed_verdict,
                old_type=source.name,
                old_type_ref=source,
                new_type=target.name,
                new_type_ref=target,
            )
            for i in moved
        )
        Inspection.objects.filter(confirmed_type=source).update(
            confirmed_type=target, review_version=F("review_version") + 1
        )
        Inspection.objects.filter(predicted_type=source).update(predicted_type=target)
        source.merged_into = target
        source.shortcut = ""
        source.save(update_fields=["merged_into", "shortcut"])
        audit_record(
            action=Action.DEFECT_TYPE_MERGE,
            team=source.product.team_id,
            actor=user,
            obj=source,
            details={"product": source.product_id, "source": source.name, "target": target.name}
            | {"target_id": target.pk, "images_moved": len(moved)},
        )
    return len(moved)


def defect_types_live(*, product: Product) -> list[DefectType]:
    return list(product.defect_types.filter(merged_into__isnull=True).order_by("shortcut", "name"))


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
    that accept overwriting). Raises StaleReview when the image changed since."""
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
            # robust: a failure to queue training must not turn a saved decision into an error for the reviewer
            transaction.on_commit(lambda: classifier_train_if_due(product_id=inspection.batch.product_id), robust=True)
    return _fresh(inspection.pk)


def _live(defect_type: DefectType | None) -> DefectType | None:
    """The type, or the one it was merged into (following a chain of merges)."""
    seen = set()
    while defect_type is not None and defect_type.merged_into_id and defect_type.pk not in seen:
        seen.add(defect_type.pk)
        defect_type = defect_type.merged_into
    return defect_type


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
        old_type = _live(event.old_type_ref)
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
        type_id = _type_id_of(version, name, live)
        return live[type_id].name if type_id is not None else name

    for inspection, pred in zip(rows, preds, strict=True):
        type_id = _type_id_of(version, pred.best, live)
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


def classifier_active(*, product_id: int) -> ClassifierVersion | None:
    return ClassifierVersion.objects.filter(product_id=product_id, is_active=True).first()


def classify_new_inspection(*, inspection_id: int) -> None:
    """Pipeline step after detection: a flagged image gets the active classifier's prediction, if any."""
    inspection = Inspection.objects.select_related("batch").get(pk=inspection_id)
    version = classifier_active(product_id=inspection.batch.product_id)
    if version is not None and inspection.embedding:
        classify_inspections(version=version, inspections=[inspection])


def _labelled(product: Product):
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
    for i in _labelled(product).select_related("confirmed_type").order_by("id"):
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


def _held_out_ids(ids: dict[str, list[int]]) -> list[int]:
    """Inspection ids in the order of classification.prototype.leave_one_out_predictions' output."""
    return [i for name in sorted(ids) if len(ids[name]) >= 2 for i in ids[name]]


def classifier_train_request(*, product: Product, user=None, trigger: str = "manual") -> ClassifierVersion:
    """Queue a new classifier version (or return the one already queued/training)."""
    from inspector.review.tasks import classifier_train_task

    with transaction.atomic():
        Product.objects.select_for_update().filter(pk=product.pk).first()
        busy = product.classifier_versions.filter(
            status__in=[ClassifierVersion.Status.QUEUED, ClassifierVersion.Status.TRAINING]
        ).first()
        if busy is not None:
            return busy
        if not _labelled(product).exists():
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


def confirmations_since_last_version(*, product_id: int) -> int:
    last = ClassifierVersion.objects.filter(product_id=product_id).order_by("-version").first()
    qs = Inspection.objects.filter(batch__product_id=product_id, confirmed_type__isnull=False)
    if last is not None:
        qs = qs.filter(reviewed_at__gt=last.created_at)
    return qs.count()


def classifier_train_if_due(*, product_id: int) -> ClassifierVersion | None:
    """Train automatically once the product has INSPECTOR_RETRAIN_EVERY new confirmed labels."""
    if confirmations_since_last_version(product_id=product_id) < settings.INSPECTOR_RETRAIN_EVERY:
        return None
    try:
        return classifier_train_request(product=Product.objects.get(pk=product_id), trigger="confirmations")
    except ValidationError:
        return None


def _accuracy(pairs: list[tuple[str, str]]) -> float | None:
    return round(100.0 * sum(t == p for t, p in pairs) / len(pairs), 2) if pairs else None


def classifier_reap(*, stale_running, stale_queued) -> dict[str, int]:
    """Called by the periodic reaper: a version whose worker was lost while training is failed with the reason
    (a lead can train again; it never blocks the product); one queued for long is sent again (the claim makes a
    duplicate harmless)."""
    from inspector.review.tasks import classifier_train_task

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


def _type_id_of(version: ClassifierVersion, name: str, live: dict[int, DefectType]) -> int | None:
    """The live type a version's class name stands for: by the id recorded at training (a rename since changes
    nothing), following merges; versions without the record fall back to the current name."""
    type_id = (version.metrics or {}).get("type_ids", {}).get(name)
    if type_id is None:
        type_id = next((t.pk for t in live.values() if t.name == name and not t.merged_into_id), None)
    defect_type = _live(live.get(type_id)) if type_id is not None else None
    return defect_type.pk if defect_type is not None else None


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
    active_acc = _accuracy([(t, _type_id_of(active, p.best, live)) for t, p in zip(truth, preds, strict=True)])
    new_acc = _accuracy([(new[r.pk].true, new[r.pk].best) for r in rows])
    metrics["compared"] = {"n": len(rows), "new": new_acc, "active": active_acc, "active_version": active.version}
    verdict = f"v{active.version} on {len(rows)} labels it never saw: {new_acc} % vs {active_acc} %"
    if new_acc >= active_acc:
        return True, "not worse than " + verdict
    return False, "worse than " + verdict + "; waits for a lead"


def _activate(cv: ClassifierVersion, *, decision: str = ClassifierVersion.Decision.PROMOTED) -> None:
    """Make `cv` the product's classifier (inside the caller's transaction) and re-classify on commit."""
    from inspector.review.tasks import reclassify_task

    # The product row is the lock: two activations at once (an automatic promotion and a lead's click) queue
    # up here instead of both clearing is_active and colliding on the one-active constraint.
    Product.objects.select_for_update().filter(pk=cv.product_id).first()
    ClassifierVersion.objects.filter(product_id=cv.product_id, is_active=True).exclude(pk=cv.pk).update(is_active=False)
    ClassifierVersion.objects.filter(pk=cv.pk).update(is_active=True, decision=decision, activated_at=timezone.now())
    enqueue_on_commit(reclassify_task, [cv.pk])


def classifier_train(*, version_id: int) -> None:
    """Task body: fit, judge by leave-one-out, compare with the active version on the same labels, then promote
    automatically only if not worse; otherwise hold for a lead."""
    claimed = ClassifierVersion.objects.filter(pk=version_id, status=ClassifierVersion.Status.QUEUED).update(
        status=ClassifierVersion.Status.TRAINING, started_at=timezone.now(), progress=10
    )
    if not claimed:
        return
    cv = ClassifierVersion.objects.select_related("product").get(pk=version_id)
    try:
        active = classifier_active(product_id=cv.product_id)  # the version this one must not be worse than
        examples, ids, pool, type_ids = confirmed_examples(product=cv.product)
        if not examples:
            raise ValueError("no confirmed defect types to train on")
        ClassifierVersion.objects.filter(pk=cv.pk).update(progress=30)
        result = ml.train_classifier(examples, pool)
        ClassifierVersion.objects.filter(pk=cv.pk).update(progress=80)
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
            ClassifierVersion.objects.filter(pk=cv.pk).update(
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
            if promote:
                _activate(cv)
                audit_record(
                    action=Action.CLASSIFIER_PROMOTE,
                    team=cv.product.team_id,
                    actor=None,
                    obj=cv,
                    details={"product": cv.product_id, "version": cv.version, "automatic": True, "reason": reason},
                )
    except OperationalError:
        ClassifierVersion.objects.filter(pk=cv.pk, status=ClassifierVersion.Status.TRAINING).update(
            status=ClassifierVersion.Status.QUEUED, progress=0
        )
        raise
    except Exception as exc:
        log.exception("training classifier version %s failed", version_id)
        ClassifierVersion.objects.filter(pk=cv.pk).update(
            status=ClassifierVersion.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], progress=100
        )


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
        _activate(version)
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


RECLASSIFY_CHUNK = 500


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


# ----------------------------------------------------------------------------------- false alarms to support


def false_alarms_to_support(*, product: Product, user) -> SupportSet:
    """A new support-set version: the active one's good images plus every confirmed false alarm (judged
    review/defective, confirmed good) not already in it. Fitting re-calibrates the thresholds; no training."""
    from inspector.products.selectors import support_set_active

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
            verdict__in=[Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE],
        ).order_by("id")
        if i.checksum not in have
    ]
    if not alarms:
        raise ValidationError("no confirmed false alarm that is not already a good image")
    # Inspections and support images have the same stored-file fields: the helper takes either.
    return support_set_from_images(product=product, user=user, images=current + alarms, source="false alarms")
