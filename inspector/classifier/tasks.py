"""The classifier's Celery tasks. Their names are the ones they had in inspector.review.tasks (given explicitly),
so messages already queued, and the "fit" queue route in settings, still find them."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from inspector.classifier import services, training
from inspector.jobs import job_task


@job_task(
    name="inspector.review.tasks.classifier_train_task",
    soft_time_limit=settings.INSPECTOR_FIT_TIME_LIMIT,
    time_limit=settings.INSPECTOR_FIT_TIME_LIMIT + 60,
)
def classifier_train_task(self, version_id: int) -> None:
    training.classifier_train(version_id=version_id)


@shared_task(
    name="inspector.review.tasks.reclassify_task",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=8,
)
def reclassify_task(version_id: int) -> None:
    services.reclassify(version_id=version_id)
