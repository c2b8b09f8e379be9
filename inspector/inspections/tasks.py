from __future__ import annotations

from celery import shared_task

from inspector.inspections import services


# Retries for trouble that is not the image's: the database or the broker away (never counted as an attempt), and
# MemoryError (counted: the service fails the image after MAX_ATTEMPTS). The service releases its claim first;
# a retry keeps the task id, so it may also take over a claim it could not release.
@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(*services.TRANSIENT_ERRORS, MemoryError),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=12,
)
def inspection_process_task(self, inspection_id: int) -> None:
    services.inspection_process(inspection_id=inspection_id, task_id=self.request.id or "")


@shared_task(ignore_result=True)
def work_reap_task() -> None:
    services.work_reap()
