from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from inspector import ml
from inspector.inspections.models import Batch, Inspection, RejectedFile
from inspector.products.models import Product, SupportImage, SupportSet
from inspector.products.selectors import support_set_active
from inspector.products.services import enqueue_on_commit, stored_uploads

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a worker lost this often on one image (OOM, kill) fails it instead of retrying forever


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
            RejectedFile.objects.bulk_create(
                RejectedFile(batch=batch, original_name=r.name[-255:], reason=r.reason[:500])
                for r in upload.rejected_for_display()
            )
            enqueue_on_commit(inspection_process_task, [i.pk for i in inspections])
    return batch


def inspection_process(*, inspection_id: int) -> None:
    """Run the detector on one queued image. Idempotent: only the caller that claims it does the work.
    Every way out leaves the row done, failed with the reason, or (database trouble) queued again."""
    claimed = Inspection.objects.filter(pk=inspection_id, status=Inspection.Status.QUEUED).update(
        status=Inspection.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return
    running = Inspection.objects.filter(pk=inspection_id, status=Inspection.Status.RUNNING)
    try:
        inspection = Inspection.objects.select_related("support_set").get(pk=inspection_id)
        support_set = inspection.support_set
        result = ml.inspect(
            inspection.image.name, support_set_id=support_set.pk, state_name=support_set.state_file.name
        )
        heatmap = default_storage.save(
            f"heatmaps/{inspection.batch_id}/{inspection.pk}-{inspection.attempts}.jpg",
            ContentFile(result.heatmap_jpeg),
        )
        nearest = SupportImage.objects.filter(support_set=support_set, position=result.nearest_position).first()
        running.update(
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
        if result.verdict in (Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE):
            _classify(inspection_id)
    except OperationalError:
        running.update(status=Inspection.Status.QUEUED)  # release the claim; the task retries
        raise
    except Exception as exc:  # the image is marked failed with the reason; the batch goes on
        log.exception("inspection %s failed", inspection_id)
        running.update(
            status=Inspection.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )


def _classify(inspection_id: int) -> None:
    """The defect type of a flagged image. A failure here keeps the detection result (the image is done) and
    leaves the type empty, to be filled by the next re-classification."""
    from inspector.review.services import classify_new_inspection

    try:
        classify_new_inspection(inspection_id=inspection_id)
    except OperationalError:
        raise
    except Exception:
        log.exception("classifying inspection %s failed; it keeps its detection result", inspection_id)


def work_reap(*, now=None) -> dict[str, int]:
    """Rescue work a lost worker left behind (killed, out of memory, a broker message gone):
    running past the hard time limit -> queued again, or failed after MAX_ATTEMPTS; queued for long -> sent
    again (the claim makes a duplicate message harmless). The same for support sets and classifier versions."""
    from inspector.inspections.tasks import inspection_process_task
    from inspector.products.tasks import support_set_fit_task

    now = now or timezone.now()
    stale_running = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
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
        status=Inspection.Status.QUEUED, queued_at=now
    )
    for pk in lost:
        inspection_process_task.delay(pk)
    waiting = Inspection.objects.filter(status=Inspection.Status.QUEUED, queued_at__lt=stale_queued)
    ids = list(waiting.values_list("pk", flat=True)[:10_000])
    Inspection.objects.filter(pk__in=ids).update(queued_at=now)  # sent again at most once per period
    for pk in ids:
        inspection_process_task.delay(pk)
    counts["resent"] = len(ids)
    stale_fit = now - timedelta(seconds=settings.INSPECTOR_FIT_TIME_LIMIT + 120)
    SupportSet.objects.filter(status=SupportSet.Status.FITTING, fit_started_at__lt=stale_fit).update(
        status=SupportSet.Status.PENDING
    )
    for pk in SupportSet.objects.filter(status=SupportSet.Status.PENDING, created_at__lt=stale_queued).values_list(
        "pk", flat=True
    ):
        support_set_fit_task.delay(pk)
    from inspector.review.services import classifier_reap

    counts.update(classifier_reap(stale_running=stale_running, stale_queued=stale_queued))
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts
