from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inspector import ml
from inspector.inspections.models import Batch, Inspection, RejectedFile
from inspector.products.models import Product, SupportImage
from inspector.products.selectors import support_set_active
from inspector.products.services import stored_uploads
from inspector.uploads import RejectedUpload

log = logging.getLogger(__name__)


def batch_create(
    *, product: Product, user, files: Iterable[tuple[str, BinaryIO]], lot: str = "", line: str = ""
) -> Batch:
    """Validate every file, store the good ones, list the refused ones with reasons, queue one task per image."""
    support_set = support_set_active(product=product)
    if support_set is None:
        raise ValidationError("this product has no ready support set yet: upload good images and wait for fitting")
    from inspector.inspections.tasks import inspection_process_task

    ids: list[int] = []
    n_rejected = 0
    with stored_uploads(files=files) as (uploads, written), transaction.atomic():
        batch = Batch.objects.create(
            product=product, support_set=support_set, uploaded_by=user, lot=lot[:100], line=line[:100]
        )
        for item in uploads:
            if isinstance(item, RejectedUpload):
                RejectedFile.objects.create(batch=batch, original_name=item.name[-255:], reason=item.reason[:500])
                n_rejected += 1
                continue
            inspection = Inspection.objects.create(
                batch=batch,
                support_set=support_set,
                image=ContentFile(item.data, name=f"i{item.extension}"),
                original_name=item.name,
                checksum=item.checksum,
            )
            written.append(inspection.image.name)
            ids.append(inspection.pk)
        if not ids and not n_rejected:
            raise ValidationError("the upload contained no files")
        batch.total = len(ids)
        batch.save(update_fields=["total"])
        transaction.on_commit(lambda: [inspection_process_task.delay(i) for i in ids])
    return batch


def inspection_process(*, inspection_id: int) -> None:
    """Run the detector on one queued image. Idempotent: only the caller that claims it does the work."""
    now = timezone.now()
    claimed = Inspection.objects.filter(pk=inspection_id, status=Inspection.Status.QUEUED).update(
        status=Inspection.Status.RUNNING, started_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return
    inspection = Inspection.objects.select_related("support_set").get(pk=inspection_id)
    support_set = inspection.support_set
    try:
        result = ml.inspect(
            inspection.image.name, support_set_id=support_set.pk, state_name=support_set.state_file.name
        )
    except Exception as exc:  # the image is marked failed with the reason; the batch goes on
        log.exception("inspection %s failed", inspection_id)
        inspection.status = Inspection.Status.FAILED
        inspection.error = f"{type(exc).__name__}: {exc}"[:2000]
        inspection.finished_at = timezone.now()
        inspection.save(update_fields=["status", "error", "finished_at"])
        return
    inspection.heatmap.save("h.jpg", ContentFile(result.heatmap_jpeg), save=False)
    inspection.score = result.score
    inspection.verdict = result.verdict
    inspection.detect_ms = result.detect_ms
    inspection.nearest_support = SupportImage.objects.filter(
        support_set=support_set, position=result.nearest_position
    ).first()
    inspection.status = Inspection.Status.DONE
    inspection.finished_at = timezone.now()
    inspection.save(
        update_fields=["heatmap", "score", "verdict", "detect_ms", "nearest_support", "status", "finished_at"]
    )
