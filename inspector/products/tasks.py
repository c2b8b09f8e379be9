from __future__ import annotations

from django.conf import settings

from inspector.jobs import job_task
from inspector.products import services


# Fitting may train (DFD: minutes on a CPU): its own time limit, INSPECTOR_FIT_TIME_LIMIT.
@job_task(soft_time_limit=settings.INSPECTOR_FIT_TIME_LIMIT, time_limit=settings.INSPECTOR_FIT_TIME_LIMIT + 60)
def support_set_fit_task(self, support_set_id: int) -> None:
    services.support_set_fit(support_set_id=support_set_id)
