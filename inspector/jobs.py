"""One lifecycle for every background job: claim, release, fail with a reason, retry policy, time limits.

Ground floor: imports no app. A job is a row with a status column, queued -> running -> done | failed, and back to
queued when a try is released for a retry. The lifecycle:

- **claim** (`job_claim`): `filter(pk=..., status=queued).update(status=running, ...)`; only the caller that
  changed the row does the work, so a duplicate message is harmless. A job with `takeover=True` records the Celery
  task id on its row, and the redelivery of that same task (acks_late: a worker killed mid-task has its message
  delivered again, same id) may take its own running claim over.
- **work**: the job's own code, given the `Claim`. It writes its result itself (through `claim.rows` when only
  the claim holder may write it).
- **release** for a retry: trouble that is not the job's (`TRANSIENT_ERRORS`: the database or the broker away) puts
  the row back to queued, not counted as an attempt, and propagates, so the task retries with backoff. Work that
  judges a failure retryable releases the claim itself and raises `RetryLater`.
- **fail** with a reason: any other exception fails the row with "<Type>: <message>" (the soft time limit with the
  job's own reason), so nothing stays silently "running".
- **retry policy and time limits**: `job_task`, the one Celery decorator (acks_late, autoretry for
  `RETRYABLE_ERRORS` with exponential backoff, soft and hard time limits).
- **enqueue** (`enqueue_on_commit`) once the rows are committed; **reap**: each app's `<rows>_reap`, called by the
  periodic reaper (inspector/reaper.py), rescues rows a lost worker left running or a lost message left queued.

A new job states its rows and its work; everything else is this module's::

    TRAINING = Job(
        ClassifierVersion, name="classifier training",
        queued="queued", running="training", failed="failed",
        on_claim={"progress": 10}, on_release={"progress": 0}, on_fail={"progress": 100},
    )

    def classifier_train(*, version_id: int) -> None:
        job_run(TRAINING, pk=version_id, work=_train)

    def _train(claim: Claim) -> None:
        version = ClassifierVersion.objects.get(pk=claim.pk)
        ...  # fit, judge, store; then write the result
        ClassifierVersion.objects.filter(pk=claim.pk).update(status="ready", ...)

    @job_task(soft_time_limit=settings.INSPECTOR_FIT_TIME_LIMIT, time_limit=settings.INSPECTOR_FIT_TIME_LIMIT + 60)
    def classifier_train_task(self, version_id: int) -> None:
        classifier_train(version_id=version_id)

A task function that moves keeps its Celery name (`job_task(name="<old dotted path>")`), so messages already queued
still find it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, models, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# Trouble with the database or the broker, not with the job: released uncounted and retried with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    KombuOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


class RetryLater(Exception):
    """Raised by a job's work that released its claim because another try may succeed (e.g. out of memory on a
    busy worker): the task retries it with the same backoff as transient errors."""


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, RetryLater)
RETRY_BACKOFF = 2  # seconds, doubled per retry (with full jitter), up to RETRY_BACKOFF_MAX
RETRY_BACKOFF_MAX = 60
MAX_RETRIES = 12
ERROR_CHARS = 2000  # a failure reason is cut to this length


@dataclass(frozen=True)
class Job:
    """The rows of one kind of job: the model, the status values of its lifecycle, and what each step writes
    besides the status (timestamps by field name; `on_*`: constant fields or expressions)."""

    model: type[models.Model]
    name: str  # for logs: "<name> <pk> failed"
    queued: str
    running: str
    failed: str
    started_field: str = "started_at"  # stamped on claim
    requeued_field: str = ""  # stamped on release, if any
    finished_field: str = ""  # stamped on fail, if any
    attempts_field: str = ""  # counted up on claim, if any; a transient release does not count
    takeover: bool = False  # the row records its task id: a redelivery of the same task may take over its claim
    on_claim: Mapping[str, Any] = field(default_factory=dict)
    on_release: Mapping[str, Any] = field(default_factory=dict)
    on_fail: Mapping[str, Any] = field(default_factory=dict)
    time_limit_reason: str = ""  # the failure reason past the soft time limit; default "<Type>: <message>"

    @property
    def objects(self) -> models.Manager:
        return self.model._default_manager


@dataclass(frozen=True)
class Claim:
    """A claimed row. `rows` is the row for as long as this caller holds the claim: empty once the claim was
    taken from it (reaped as lost and given to another task), so a late result is never written over."""

    job: Job
    pk: int
    rows: QuerySet

    def release(self, *, counted: bool = False) -> None:
        """Back to queued for a retry. Best effort: the database may be the very thing that is down; then the
        retry (same task id) takes the running row over, or the reaper rescues it."""
        job = self.job
        fields: dict[str, Any] = {"status": job.queued, **job.on_release}
        if job.requeued_field:
            fields[job.requeued_field] = timezone.now()
        if job.attempts_field and not counted:
            fields[job.attempts_field] = F(job.attempts_field) - 1
        try:
            self.rows.update(**fields)
        except TRANSIENT_ERRORS:
            log.warning("could not release the claim on %s %s; the retry or the reaper takes it", job.name, self.pk)

    def fail(self, reason: str) -> int:
        """Failed, with the reason shown to the user. Returns 1, or 0 if the claim was no longer held."""
        job = self.job
        fields: dict[str, Any] = {"status": job.failed, "error": reason[:ERROR_CHARS], **job.on_fail}
        if job.finished_field:
            fields[job.finished_field] = timezone.now()
        return self.rows.update(**fields)


def job_claim(job: Job, *, pk: int, task_id: str = "") -> Claim | None:
    """Claim the row (queued -> running, or a takeover of the same task's running claim); None if another caller
    holds it, it is finished, or it is gone."""
    claimable = Q(status=job.queued)
    fields: dict[str, Any] = {"status": job.running, job.started_field: timezone.now(), **job.on_claim}
    if job.attempts_field:
        fields[job.attempts_field] = F(job.attempts_field) + 1
    if job.takeover:
        fields["task_id"] = task_id
        if task_id:
            claimable |= Q(status=job.running, task_id=task_id)
    if not job.objects.filter(claimable, pk=pk).update(**fields):
        return None
    rows = job.objects.filter(pk=pk, status=job.running)
    return Claim(job, pk, rows.filter(task_id=task_id) if job.takeover else rows)


def job_run(job: Job, *, pk: int, work: Callable[[Claim], None], task_id: str = "") -> None:
    """Claim the row and do the work; every way out leaves it done (the work's own write), failed with the
    reason, or queued again for a retry (TRANSIENT_ERRORS and RetryLater propagate for the task to retry)."""
    claim = job_claim(job, pk=pk, task_id=task_id)
    if claim is None:
        return
    try:
        work(claim)
    except TRANSIENT_ERRORS:
        claim.release()
        raise
    except RetryLater:
        raise  # the work released (or failed) the claim itself
    except SoftTimeLimitExceeded as exc:
        log.warning("%s %s passed its soft time limit", job.name, pk)
        claim.fail(job.time_limit_reason or f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the row shows the reason; the queue goes on
        log.exception("%s %s failed", job.name, pk)
        claim.fail(f"{type(exc).__name__}: {exc}")


def job_task(
    *, name: str | None = None, soft_time_limit: int | None = None, time_limit: int | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """The Celery task decorator of every job: bound (the body gets `self`, for `self.request.id`), acknowledged
    late, retried for RETRYABLE_ERRORS with exponential backoff, with soft and hard time limits (default: the
    app's CELERY_TASK_SOFT_TIME_LIMIT and CELERY_TASK_TIME_LIMIT)."""
    return shared_task(
        name=name,
        bind=True,
        acks_late=True,
        autoretry_for=RETRYABLE_ERRORS,
        retry_backoff=RETRY_BACKOFF,
        retry_backoff_max=RETRY_BACKOFF_MAX,
        max_retries=MAX_RETRIES,
        soft_time_limit=soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT,
        time_limit=time_limit or settings.CELERY_TASK_TIME_LIMIT,
    )


def enqueue_on_commit(task, ids: list[int]) -> None:
    """Queue one task per id once the rows are committed. robust: a broker error is logged, not raised, so
    the committed rows and files stay; the periodic reaper enqueues what is still queued."""

    def send() -> None:
        for i in ids:
            task.delay(i)

    transaction.on_commit(send, robust=True)
