"""The one job lifecycle (inspector/jobs.py): every job task has the same retry policy, the reaper task keeps the
name beat sends."""

from __future__ import annotations

from django.conf import settings

from inspector import jobs
from inspector.celery import app as celery_app
from inspector.inspections.tasks import inspection_process_task
from inspector.products.tasks import support_set_fit_task


def test_every_job_task_retries_only_transient_errors_with_backoff_and_has_both_time_limits():
    for task in (inspection_process_task, support_set_fit_task):
        assert task.acks_late, task.name
        assert set(task.autoretry_for) == {*jobs.TRANSIENT_ERRORS, jobs.RetryLater}, task.name
        assert (task.retry_backoff, task.retry_backoff_max, task.max_retries) == (2, 60, 12), task.name
        assert 0 < task.soft_time_limit < task.time_limit, task.name
    assert (inspection_process_task.soft_time_limit, inspection_process_task.time_limit) == (
        settings.CELERY_TASK_SOFT_TIME_LIMIT,
        settings.CELERY_TASK_TIME_LIMIT,
    )
    assert support_set_fit_task.soft_time_limit == settings.INSPECTOR_FIT_TIME_LIMIT


def test_job_tasks_keep_their_names_so_queued_messages_still_find_them():
    assert inspection_process_task.name == "inspector.inspections.tasks.inspection_process_task"
    assert support_set_fit_task.name == "inspector.products.tasks.support_set_fit_task"
    assert set(settings.CELERY_TASK_ROUTES) >= {inspection_process_task.name, support_set_fit_task.name}


def test_a_worker_registers_the_reaper_under_the_name_beat_sends():
    celery_app.loader.import_default_modules()  # what a worker does at start
    name = settings.CELERY_BEAT_SCHEDULE["work-reap"]["task"]
    assert name == "inspector.inspections.tasks.work_reap_task"
    assert celery_app.tasks[name].run.__module__ == "inspector.reaper"
