from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from inspector.inspections import services


# Retries only for database trouble (transient; the service released its claim first), with backoff.
@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=8)
def inspection_process_task(inspection_id: int) -> None:
    services.inspection_process(inspection_id=inspection_id)


@shared_task(ignore_result=True)
def work_reap_task() -> None:
    services.work_reap()
