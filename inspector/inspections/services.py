from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.module_loading import import_string

from inspector import ml
from inspector.inspections.models import Batch, Inspection, RejectedFile
from inspector.jobs import Claim, Job, RetryLater, enqueue_on_commit, job_run
from inspector.products.models import Product, SupportImage
from inspector.products.selectors import support_set_active
from inspector.uploads import stored_uploads

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a worker lost this often on one image (OOM, kill) fails it instead of retrying forever
LOST_REASON = f"the worker was lost {MAX_ATTEMPTS} times on this image (killed or out of memory)"
# Inspecting one image. Claimed queued -> running, or, for a redelivery of the same task (acks_late: a worker
# killed mid-task has its message delivered again with the same id), running -> running under that task id.
# Every claim counts as an attempt, except those released for database or broker trouble.
INSPECTION_JOB = Job(
    Inspection,
    name="inspection",
    queued=Inspection.Status.QUEUED,
    running=Inspection.Status.RUNNING,
    failed=Inspection.Status.FAILED,
    requeued_field="queued_at",
    finished_field="finished_at",
    attempts_field="attempts",
    takeover=True,
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
    again for a retry (transient trouble, or out of memory: raised for the task to retry with backoff)."""
    job_run(INSPECTION_JOB, pk=inspection_id, work=_inspect, task_id=task_id)


def _inspect(claim: Claim) -> None:
    inspection = Inspection.objects.select_related("support_set").get(pk=claim.pk)
    if inspection.attempts > MAX_ATTEMPTS:  # every earlier claim ended with the worker gone (killed, OOM)
        claim.fail(LOST_REASON)
        return
    try:
        flagged = _detect(claim, inspection)
    except MemoryError:
        # Maybe the image, maybe a busy worker: a bounded number of tries, then failed with the reason.
        if inspection.attempts >= MAX_ATTEMPTS:
            claim.fail(f"MemoryError: out of memory on {MAX_ATTEMPTS} attempts")
            return
        claim.release(counted=True)
        raise RetryLater(f"out of memory on attempt {inspection.attempts}") from None
    if flagged:
        _after_flagged(inspection.pk)


def _detect(claim: Claim, inspection: Inspection) -> bool:
    """Score the image and write the result if the claim is still ours; True if it was written and flagged."""
    support_set = inspection.support_set
    result = ml.inspect(inspection.image.name, support_set_id=support_set.pk, state_name=support_set.state_file.name)
    heatmap = default_storage.save(
        f"heatmaps/{inspection.batch_id}/{inspection.pk}-{inspection.attempts}.jpg", ContentFile(result.heatmap_jpeg)
    )
    nearest = SupportImage.objects.filter(support_set=support_set, position=result.nearest_position).first()
    written = claim.rows.update(
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
        return False
    return result.verdict in Inspection.Verdict.FLAGGED


def _after_flagged(inspection_id: int) -> None:
    """The steps of higher apps that follow the detection of a flagged image (the classifier's defect type), in the
    same task. They are named in settings.INSPECTOR_AFTER_FLAGGED, not imported: inspections sits below the apps
    that use its results. A failing step keeps the detection result (the image is done) and leaves its own part
    empty (the defect type: filled by the next re-classification)."""
    for path in settings.INSPECTOR_AFTER_FLAGGED:
        try:
            import_string(path)(inspection_id=inspection_id)
        except Exception:
            log.exception("%s failed on inspection %s; it keeps its detection result", path, inspection_id)


def inspections_reap(*, now: datetime) -> dict[str, int]:
    """Called by the periodic reaper (inspector/reaper.py): rescue images a lost worker left behind (killed, out of
    memory, a broker message gone): running past INSPECTOR_LOST_AFTER (more than the hard time limit) -> queued
    again, or failed after MAX_ATTEMPTS; queued for long -> sent again (the claim makes a duplicate harmless)."""
    from inspector.inspections.tasks import inspection_process_task

    stale_running = now - timedelta(seconds=settings.INSPECTOR_LOST_AFTER)
    stale_queued = now - timedelta(seconds=settings.INSPECTOR_REQUEUE_AFTER)
    counts = {}
    running = Inspection.objects.filter(status=Inspection.Status.RUNNING, started_at__lt=stale_running)
    counts["failed"] = running.filter(attempts__gte=MAX_ATTEMPTS).update(
        status=Inspection.Status.FAILED, error=LOST_REASON, finished_at=now
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
    return counts
