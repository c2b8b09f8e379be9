from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Max
from django.utils import timezone

from inspector import ml
from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.jobs import Claim, Job, enqueue_on_commit, job_run
from inspector.products.models import Membership, Product, Role, SupportImage, SupportSet, Team
from inspector.products.selectors import team_get_for_user, teams_with_role
from inspector.uploads import RejectedUpload, stored_uploads

log = logging.getLogger(__name__)
# Fitting a support set: claimed pending -> fitting; a failure is shown on the product page, never a silent
# "fitting". The time limit is the fit task's own (DFD trains for minutes).
FIT_JOB = Job(
    SupportSet,
    name="support set fit",
    queued=SupportSet.Status.PENDING,
    running=SupportSet.Status.FITTING,
    failed=SupportSet.Status.FAILED,
    started_field="fit_started_at",
    on_claim={"progress": 0.0, "progress_message": ""},
    time_limit_reason=(
        f"fitting took longer than INSPECTOR_FIT_TIME_LIMIT ({settings.INSPECTOR_FIT_TIME_LIMIT} s); "
        "raise it or use fewer images"
    ),
)


def team_for_user(*, user) -> Team:
    """The user's first team; a user without any gets a personal team, as its admin."""
    team = user.teams.order_by("id").first()
    if team is None:
        with transaction.atomic():
            team, _ = Team.objects.get_or_create(name=f"{user.get_username()}'s team")
            Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
    return team


def product_create(*, user, name: str, description: str = "", team_id: int | None = None) -> Product:
    """A new product of `team_id` (default: the user's first team where they are lead or admin; a user with no
    team at all gets a personal one). Creating products needs the lead role."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "a product needs a name"})
    if team_id is not None:
        team = team_get_for_user(user=user, team_id=team_id, role=Role.LEAD)
    else:
        team = teams_with_role(user=user, role=Role.LEAD).first()
        if team is None and not user.teams.exists():
            team = team_for_user(user=user)
        if team is None:
            raise PermissionDenied("creating a product needs the lead role in a team")
    try:
        with transaction.atomic():
            product = Product.objects.create(team=team, name=name, description=description, created_by=user)
            audit_record(action=Action.PRODUCT_CREATE, team=team, actor=user, obj=product, details={"name": name})
            return product
    except IntegrityError:
        raise ValidationError({"name": f"your team already has a product named {name!r}"}) from None


# --------------------------------------------------------------------------------------------- membership


def _admins_left(team: Team, *, without: Membership) -> int:
    return team.memberships.filter(role=Role.ADMIN).exclude(pk=without.pk).count()


def _role_checked(role: str) -> str:
    if role not in Role.values:
        raise ValidationError({"role": f"role must be one of {Role.values}"})
    return role


def membership_add(*, team: Team, actor, username: str, role: str) -> Membership:
    """Add an existing user to the team with a role (the caller checked that `actor` is the team's admin)."""
    role = _role_checked(role)
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username.strip()}).first()
    if user is None:
        raise ValidationError({"username": f"no user named {username.strip()!r}"})
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
        if not created:
            raise ValidationError({"username": f"{username.strip()!r} is already a member (as {membership.role})"})
        audit_record(
            action=Action.MEMBER_ADD,
            team=team,
            actor=actor,
            object_type="user",
            object_id=user.pk,
            details={"username": user.get_username(), "role": role},
        )
    return membership


def _membership_locked(team: Team, user_id: int) -> Membership:
    # The team row is locked so two admins cannot each demote the other and leave the team with none.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    membership = team.memberships.select_related("user").filter(user_id=user_id).first()
    if membership is None:
        raise ValidationError({"user": "no such member of this team"})
    return membership


def membership_role_set(*, team: Team, actor, user_id: int, role: str) -> Membership:
    role = _role_checked(role)
    with transaction.atomic():
        membership = _membership_locked(team, user_id)
        old = membership.role
        if old == role:
            return membership
        if old == Role.ADMIN and not _admins_left(team, without=membership):
            raise ValidationError({"role": "the last admin of a team cannot be demoted: make another admin first"})
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            action=Action.ROLE_CHANGE,
            team=team,
            actor=actor,
            object_type="user",
            object_id=user_id,
            details={"username": membership.user.get_username(), "from": old, "to": role},
        )
    return membership


def membership_remove(*, team: Team, actor, user_id: int) -> None:
    with transaction.atomic():
        membership = _membership_locked(team, user_id)
        if membership.role == Role.ADMIN and not _admins_left(team, without=membership):
            raise ValidationError({"user": "the last admin of a team cannot be removed: make another admin first"})
        membership.delete()
        audit_record(
            action=Action.MEMBER_REMOVE,
            team=team,
            actor=actor,
            object_type="user",
            object_id=user_id,
            details={"username": membership.user.get_username(), "role": membership.role},
        )


def support_set_create(
    *, product: Product, user, files: Iterable[tuple[str, BinaryIO]]
) -> tuple[SupportSet, list[RejectedUpload]]:
    """A new support-set version from uploaded good images; fitting is queued once the rows are committed."""
    with stored_uploads(files=files, prefix="support") as upload:
        if not upload.images:
            reasons = "; ".join(f"{r.name}: {r.reason}" for r in upload.rejected_for_display()) or "no files"
            raise ValidationError(f"no usable image in the upload ({reasons})")
        support_set = _support_set_new(
            product=product,
            user=user,
            rows=[(i.name, i.original_name, i.checksum, i.width, i.height) for i in upload.images],
            source="upload",
        )
    return support_set, upload.rejected_for_display()


def support_set_from_images(*, product: Product, user, images: Sequence, source: str = "refit") -> SupportSet:
    """A new support-set version of images already stored (support images or inspections: anything with image,
    original_name, checksum, width, height; the files are shared, not copied), fitted with the product's current
    detector; fitting is queued on commit."""
    rows = [(i.image.name, i.original_name, i.checksum, i.width, i.height) for i in images]
    return _support_set_new(product=product, user=user, rows=rows, source=source)


def _support_set_new(
    *, product: Product, user, rows: list[tuple[str, str, str, int, int]], source: str
) -> SupportSet:
    """The next support-set version of stored files ((name, original name, checksum, width, height) each), fitted
    with the product's current detector once the rows are committed."""
    from inspector.products.tasks import support_set_fit_task

    with transaction.atomic():
        # Lock the product row so two requests cannot take the same version number (PostgreSQL; SQLite
        # transactions are IMMEDIATE, which serialises writers).
        Product.objects.select_for_update().filter(pk=product.pk).first()
        version = (product.support_sets.aggregate(v=Max("version"))["v"] or 0) + 1
        support_set = SupportSet.objects.create(
            product=product, version=version, method=product.method, created_by=user
        )
        SupportImage.objects.bulk_create(
            SupportImage(
                support_set=support_set,
                position=position,
                image=name,
                original_name=original[-255:],
                checksum=checksum,
                width=width,
                height=height,
            )
            for position, (name, original, checksum, width, height) in enumerate(rows)
        )
        audit_record(
            action=Action.SUPPORT_SET_CREATE,
            team=product.team_id,
            actor=user,
            obj=support_set,
            details={"product": product.pk, "version": version, "method": product.method, "images": len(rows)}
            | {"source": source},
        )
        enqueue_on_commit(support_set_fit_task, [support_set.pk])
    return support_set


def product_detector_set(*, product: Product, user, method: str) -> SupportSet | None:
    """Switch the product's detector. Its newest support set's good images are fitted again with the new method
    as a new version (detection needs no training), so the switch takes effect once that fit is ready; earlier
    batches keep the version that judged them. Returns the new version, or None if there was nothing to refit."""
    if method not in ml.detector_methods():
        raise ValidationError({"method": f"detector must be one of {list(ml.detector_methods())}"})
    if method == product.method:
        return None
    old = product.method
    with transaction.atomic():
        Product.objects.filter(pk=product.pk).update(detector_method=method)
        product.detector_method = method
        audit_record(
            action=Action.DETECTOR_SWITCH,
            team=product.team_id,
            actor=user,
            obj=product,
            details={"from": old, "to": method},
        )
        latest = product.support_sets.order_by("-version").first()
        if latest is None:
            return None
        return support_set_from_images(
            product=product, user=user, images=list(latest.images.order_by("position")), source="detector switch"
        )


PROGRESS_EVERY = 2.0  # seconds between progress writes: the page polls every 2 s


def _progress_writer(support_set_id: int) -> Callable[[float, str], None]:
    """A progress callback for the detector that records (fraction, message) on the row, at most every
    PROGRESS_EVERY seconds; a failed write never stops the fit."""
    last = [0.0]

    def write(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY and fraction < 1.0:
            return
        last[0] = now
        try:
            SupportSet.objects.filter(pk=support_set_id, status=SupportSet.Status.FITTING).update(
                progress=min(1.0, max(0.0, fraction)), progress_message=message[:200]
            )
        except OperationalError:
            log.warning("could not record fit progress of support set %s", support_set_id)

    return write


def support_set_fit(*, support_set_id: int) -> None:
    """Fit the detector on a pending support set. Idempotent: only the caller that claims it does the work."""
    job_run(FIT_JOB, pk=support_set_id, work=_fit)


def _fit(claim: Claim) -> None:
    support_set = SupportSet.objects.get(pk=claim.pk)
    names = [img.image.name for img in support_set.images.order_by("position")]
    result = ml.fit_support(names, support_set.method or None, progress=_progress_writer(claim.pk))
    state_name = default_storage.save(
        f"support-state/{support_set.product_id}/v{support_set.version}-{uuid.uuid4().hex}.pt",
        ContentFile(result.state),
    )
    with transaction.atomic():
        SupportSet.objects.filter(pk=claim.pk).update(
            state_file=state_name,
            thresholds=result.thresholds,
            fit_seconds=result.seconds,
            fitted_at=timezone.now(),
            status=SupportSet.Status.READY,
            progress=1.0,
            progress_message="",
        )
        # The fit calibrates the thresholds new batches are judged by: a quality-relevant change.
        audit_record(
            action=Action.THRESHOLDS_SET,
            team=support_set.product.team_id,
            actor=None,
            obj=support_set,
            details={"product": support_set.product_id, "version": support_set.version}
            | {"thresholds": result.thresholds},
        )


def support_sets_reap(*, now: datetime) -> dict[str, int]:
    """Called by the periodic reaper: a fit stuck in fitting (its worker lost) goes back to pending and is sent
    again at once; a pending one whose message may be gone is sent again after INSPECTOR_REQUEUE_AFTER (the claim
    ignores duplicates). A fit may run up to INSPECTOR_FIT_TIME_LIMIT: it is not lost before that."""
    from inspector.products.tasks import support_set_fit_task

    stale_fit = now - timedelta(seconds=settings.INSPECTOR_FIT_TIME_LIMIT + 120)
    stale_queued = now - timedelta(seconds=settings.INSPECTOR_REQUEUE_AFTER)
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
    return {"fits_resent": len(fits)}
