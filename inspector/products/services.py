from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from inspector import ml
from inspector.products.models import Product, SupportImage, SupportSet, Team
from inspector.uploads import AcceptedImage, Limits, RejectedUpload, UploadTooLarge, iter_uploads

log = logging.getLogger(__name__)


def upload_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.INSPECTOR_MAX_FILE_BYTES,
        max_pixels=settings.INSPECTOR_MAX_PIXELS,
        max_files=settings.INSPECTOR_MAX_FILES_PER_UPLOAD,
        max_zip_bytes=settings.INSPECTOR_MAX_ZIP_BYTES,
    )


@contextmanager
def stored_uploads(
    *, files: Iterable[tuple[str, BinaryIO]]
) -> Iterator[tuple[Iterator[AcceptedImage | RejectedUpload], list[str]]]:
    """Validated uploads as a stream (one file in memory at a time) and a list where the caller records
    each storage name it writes: if the block fails, the rows roll back with the transaction and these
    files are deleted, so nothing is left half-stored."""
    written: list[str] = []
    try:
        yield iter_uploads(files, upload_limits()), written
    except UploadTooLarge as exc:
        _delete(written)
        raise ValidationError(str(exc)) from None
    except BaseException:
        _delete(written)
        raise


def _delete(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def team_for_user(*, user) -> Team:
    """The user's team; a user without one gets a personal team (roles arrive with the production issue)."""
    team = user.teams.order_by("id").first()
    if team is None:
        team = Team.objects.create(name=f"{user.get_username()}'s team")
        team.members.add(user)
    return team


def product_create(*, user, name: str, description: str = "") -> Product:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "a product needs a name"})
    team = team_for_user(user=user)
    if Product.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"your team already has a product named {name!r}"})
    return Product.objects.create(team=team, name=name, description=description, created_by=user)


def support_set_create(
    *, product: Product, user, files: Iterable[tuple[str, BinaryIO]]
) -> tuple[SupportSet, list[RejectedUpload]]:
    """A new support-set version from uploaded good images; fitting is queued once the rows are committed."""
    from inspector.products.tasks import support_set_fit_task

    rejected: list[RejectedUpload] = []
    with stored_uploads(files=files) as (uploads, written), transaction.atomic():
        # Lock the product row so two uploads cannot take the same version number.
        Product.objects.select_for_update().filter(pk=product.pk).first()
        version = (product.support_sets.aggregate(v=Max("version"))["v"] or 0) + 1
        support_set = SupportSet.objects.create(
            product=product, version=version, method=settings.INSPECTOR_DETECTOR_METHOD, created_by=user
        )
        position = 0
        for item in uploads:
            if isinstance(item, RejectedUpload):
                rejected.append(item)
                continue
            row = SupportImage.objects.create(
                support_set=support_set,
                position=position,
                image=ContentFile(item.data, name=f"s{item.extension}"),
                original_name=item.name,
                checksum=item.checksum,
            )
            written.append(row.image.name)
            position += 1
        if position == 0:
            reasons = "; ".join(f"{r.name}: {r.reason}" for r in rejected) or "no files"
            raise ValidationError(f"no usable image in the upload ({reasons})")
        transaction.on_commit(lambda: support_set_fit_task.delay(support_set.pk))
    return support_set, rejected


def support_set_fit(*, support_set_id: int) -> None:
    """Fit the detector on a pending support set. Idempotent: only the caller that claims it does the work."""
    claimed = SupportSet.objects.filter(pk=support_set_id, status=SupportSet.Status.PENDING).update(
        status=SupportSet.Status.FITTING, fit_started_at=timezone.now()
    )
    if not claimed:
        return
    support_set = SupportSet.objects.get(pk=support_set_id)
    names = [img.image.name for img in support_set.images.order_by("position")]
    try:
        result = ml.fit_support(names)
    except Exception as exc:  # any failure must be visible on the product page, not a silent "fitting"
        log.exception("fitting support set %s failed", support_set_id)
        support_set.status = SupportSet.Status.FAILED
        support_set.error = f"{type(exc).__name__}: {exc}"[:2000]
        support_set.save(update_fields=["status", "error"])
        return
    support_set.state_file.save("state.pt", ContentFile(result.state), save=False)
    support_set.thresholds = result.thresholds
    support_set.fit_seconds = result.seconds
    support_set.fitted_at = timezone.now()
    support_set.status = SupportSet.Status.READY
    support_set.save(update_fields=["state_file", "thresholds", "fit_seconds", "fitted_at", "status"])
