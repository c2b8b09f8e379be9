from __future__ import annotations

from inspector.inspections import services
from inspector.jobs import job_task


# The retry policy is the job lifecycle's (inspector/jobs.py): database or broker trouble (never counted as an
# attempt) and out of memory (counted: the service fails the image after MAX_ATTEMPTS) are retried with backoff.
# The service releases its claim first; a retry keeps the task id, so it may also take over a claim it could not
# release.
@job_task()
def inspection_process_task(self, inspection_id: int) -> None:
    services.inspection_process(inspection_id=inspection_id, task_id=self.request.id or "")
