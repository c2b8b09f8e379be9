from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Min, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inspector import ml
from inspector.inspections.models import Batch, Inspection, RejectedFile
from inspector.products.models import Product, SupportImage, SupportSet
from inspector.products.selectors import support_set_active
from inspector.products.services import enqueue_on_commit, stored_uploads

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a worker lost this often on one image (OOM, kill) fails it instead of retrying forever
# Trouble with the database or the broker, not with the image: retried with backoff, never counted as an attempt.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    KombuOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


def batch_create(
    *, product: Product, user, files: Iterable[tuple[str, BinaryIO]], lot: str = "", line: str = ""
) -> Batch:
    """Validate every file, store the good ones, list the refused ones with reasons, queue one task per image."""
    from inspector.inspections.tasks import inspection_process_task

    support_set = support_set_active(product=product)
    if support_set is None:
        raise ValidationError("this product has no ready support set yet: upload good images and wait for fitting")
    with stored_uploads(files=files, prefix="inspections") as upload:
        if not upload.images and not upload.n_rejected:
            raise ValidationError("the upload contained no files")
        with transaction.atomic():
            batch = Batch.objects.create(
                product=product,
                support_set=support_set,
                uploaded_by=user,
                lot=lot[:100],
                line=line[:100],
                total=len(upload.images),
            )
            inspections = Inspection.objects.bulk_create(
                Inspection(
                    batch=batch,
                    support_set=support_set,
                    image=image.name,
                    original_name=image.original_name[-255:],
                    checksum=image.checksum,
                    width=image.width,
                    height=image.height,
                )
                for image in upload.images
            )
            _mark_duplicates(product=product, inspections=inspections)
            RejectedFile.objects.bulk_create(
                RejectedFile(batch=batch, original_name=r.name[-255:], reason=r.reason[:500])
                for r in upload.rejected_for_display()
            )
            enqueue_on_commit(inspection_process_task, [i.pk for i in inspections])
    return batch


def _mark_duplicates(*, product: Product, inspections: list[Inspection]) -> None:
    """Point each new inspection whose file (sha256) the product has seen before at the earliest one; they are
    still inspected, and shown as duplicates rather than silently counted twice."""
    checksums = {i.checksum for i in inspections}
    first = dict(
        Inspection.objects.filter(batch__product=product, checksum__in=checksums)
        .values("checksum")
        .annotate(first=Min("id"))
        .values_list("checksum", "first")
    )
    marked = [i for i in inspections if first.get(i.checksum, i.pk) != i.pk]
    for i in marked:
        i.duplicate_of_id = first[i.checksum]
    Inspection.objects.bulk_update(marked, ["duplicate_of"], batch_size=500)


def inspection_process(*, inspection_id: int, task_id: str = "") -> None:
    """Run the detector on one queued image. Idempotent: only the caller that claims it does the work, and only
    the claim holder writes the result. Every way out leaves the row done, failed with the reason, or queued
    again for a retry (transient trouble: raised for the task to retry with backoff).

    The claim is the row going queued -> running, or, for a redelivery of the same task (acks_late: a worker
    killed mid-task has its message delivered again with the same id), running -> running under that task id."""
    claimable = Q(status=Inspection.Status.QUEUED)
    if task_id:
        claimable |= Q(status=Inspection.Status.RUNNING, task_id=task_id)
    claimed = Inspection.objects.filter(claimable, pk=inspection_id).update(
        status=Inspection.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1, task_id=task_id
    )
    if not claimed:
        return
    mine = Inspection.objects.filter(pk=inspection_id, status=Inspection.Status.RUNNING, task_id=task_id)
    inspection = None
    try:
        inspection = Inspection.objects.select_related("support_set").get(pk=inspection_id)
        if inspection.attempts > MAX_ATTEMPTS:  # every earlier claim ended with the worker gone (killed, OOM)
            _fail(mine, f"the worker was lost {MAX_ATTEMPTS} times on this image (killed or out of memory)")
            return
        support_set = inspection.support_set
        result = ml.inspect(
            inspection.image.name, support_set_id=support_set.pk, state_name=support_set.state_file.name
        )
        heatmap = default_storage.save(
            f"heatmaps/{inspection.batch_id}/{inspection.pk}-{inspection.attempts}.jpg",
            ContentFile(result.heatmap_jpeg),
        )
        nearest = SupportImage.objects.filter(support_set=support_set, position=result.nearest_position).first()
        written = mine.update(
            heatmap=heatmap,
            score=result.score,
            verdict=result.verdict,
            detect_ms=result.detect_ms,
            nearest_support=nearest,
            embedding=result.embedding,
            status=Inspection.Status.DONE,
            finished_at=timezone.now(),
            error="",
        )
        if not written:  # the claim was taken from us (reaped as lost): the holder writes its own result
            default_storage.delete(heatmap)
            return
        if result.verdict in (Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE):
            _classify(inspection_id)
    except TRANSIENT_ERRORS:
        # Not the image's fault: release the claim uncounted (best effort: the database may be the thing that is
        # down; then the retry, same task id, takes the running row over) and let the task retry with backoff.
        _release(mine, count=False)
        raise
    except MemoryError:
        # Maybe the image, maybe a busy worker: a bounded number of tries, then failed with the reason.
        if inspection is None or inspection.attempts >= MAX_ATTEMPTS:
            _fail(mine, f"MemoryError: out of memory on {MAX_ATTEMPTS} attempts")
            return
        _release(mine, count=True)
        raise
    except Exception as exc:  # the image is marked failed with the reason; the batch goes on
        log.exception("inspection %s failed", inspection_id)
        _fail(mine, f"{type(exc).__name__}: {exc}")


def _release(running: QuerySet[Inspection], *, count: bool) -> None:
    try:
        uncounted = {} if count else {"attempts": F("attempts") - 1}
        running.update(status=Inspection.Status.QUEUED, queued_at=timezone.now(), **uncounted)
    except TRANSIENT_ERRORS:
        log.warning("could not release a claim (database down?); the retry of the same task takes it over")


def _fail(running: QuerySet[Inspection], reason: str) -> None:
    running.update(status=Inspection.Status.FAILED, error=reason[:2000], finished_at=timezone.now())


def _classify(inspection_id: int) -> None:
    """The defect type of a flagged image. A failure here keeps the detection result (the image is done) and
    leaves the type empty, to be filled by the next re-classification."""
    from inspector.review.services import classify_new_inspection

    try:
        classify_new_inspection(inspection_id=inspection_id)
    except Exception:
        log.exception("classifying inspection %s failed; it keeps its detection result", inspection_id)


def work_reap(*, now=None) -> dict[str, int]:
    """Rescue work a lost worker left behind (killed, out of memory, a broker message gone):
    running past INSPECTOR_LOST_AFTER (more than the hard time limit) -> queued again, or failed after
    MAX_ATTEMPTS; queued for long -> sent
    again (the claim makes a duplicate message harmless). The same for support sets and classifier versions."""
    from inspector.inspections.tasks import inspection_process_task
    from inspector.products.tasks import support_set_fit_task

    now = now or timezone.now()
    stale_running = now - timedelta(seconds=settings.INSPECTOR_LOST_AFTER)
    stale_queued = now - timedelta(seconds=settings.INSPECTOR_REQUEUE_AFTER)
    counts = {}
    running = Inspection.objects.filter(status=Inspection.Status.RUNNING, started_at__lt=stale_running)
    counts["failed"] = running.filter(attempts__gte=MAX_ATTEMPTS).update(
        status=Inspection.Status.FAILED,
        error=f"the worker was lost {MAX_ATTEMPTS} times on this image (killed or out of memory)",
        finished_at=now,
    )
    lost = list(running.values_list("pk", flat=True))  # the repeat offenders are failed above
    counts["requeued"] = Inspection.objects.filter(pk__in=lost, status=Inspection.Status.RUNNING).update(
        status=Inspection.Status.QUEUED, queued_at=now, task_id=""
    )
    for pk in lost:
        inspection_process_task.delay(pk)
    waiting = Inspection.objects.filter(status=Inspection.Status.QUEUED, queued_at__lt=stale_queued)
    ids = list(waiting.values_list("pk", flat=True)[:10_000])
    Inspection.objects.filter(pk__in=ids).update(queued_at=now)  # sent again at most once per period
    for pk in ids:
        inspection_process_task.delay(pk)
    counts["resent"] = len(ids)
    # Fits: one stuck in fitting (its worker lost) goes back to pending and is sent again at once; a pending one
    # whose message may be gone is sent again after INSPECTOR_REQUEUE_AFTER (the claim ignores duplicates).
    stale_fit = now - timedelta(seconds=settings.INSPECTOR_FIT_TIME_LIMIT + 120)
    lost_fits = list(
        SupportSet.objects.filter(status=SupportSet.Status.FITTING, fit_started_at__lt=stale_fit).values_list(
            "pk", flat=True
        )
    )
    SupportSet.objects.filter(pk__in=lost_fits, status=SupportSet.Status.FITTING).update(
        status=SupportSet.Status.PENDING
    )
    waiting_fits = SupportSet.objects.filter(status=SupportSet.Status.PENDING, created_at__lt=stale_queued)
    fits = sorted(set(lost_fits) | set(waiting_fits.values_list("pk", flat=True)))
    for pk in fits:
        support_set_fit_task.delay(pk)
    counts["fits_resent"] = len(fits)
    from inspector.review.services import classifier_reap

    counts.update(classifier_reap(stale_running=stale_running, stale_queued=stale_queued))
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts
