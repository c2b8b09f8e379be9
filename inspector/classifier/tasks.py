"""The classifier's Celery tasks. Their names are the ones they had in inspector.review.tasks (given explicitly),
so messages already queued, and the "fit" queue route in settings, still find them."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from inspector.classifier import services, training


@shared_task(
    name="inspector.review.tasks.classifier_train_task",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=8,
)
def classifier_train_task(version_id: int) -> None:
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
