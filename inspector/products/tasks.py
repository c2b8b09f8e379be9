from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from inspector.products import services


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=8,
    soft_time_limit=settings.INSPECTOR_FIT_TIME_LIMIT,
    time_limit=settings.INSPECTOR_FIT_TIME_LIMIT + 60,
)
def support_set_fit_task(support_set_id: int) -> None:
    services.support_set_fit(support_set_id=support_set_id)
