from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from inspector.review import services


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=8)
def classifier_train_task(version_id: int) -> None:
    services.classifier_train(version_id=version_id)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=8)
def reclassify_task(version_id: int) -> None:
    services.reclassify(version_id=version_id)
