"""The periodic reaper (Celery beat, every INSPECTOR_REAP_EVERY seconds): rescues work a lost worker left behind
(killed, out of memory, past its time limit) or a lost broker message left queued. Top floor: each app owns the
rescue of its own rows (`<rows>_reap`); this module only calls them all and logs what they did."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from inspector.classifier.services import classifier_reap
from inspector.inspections.services import inspections_reap
from inspector.products.services import support_sets_reap

log = logging.getLogger(__name__)


def work_reap(*, now: datetime | None = None) -> dict[str, int]:
    """Run every app's reaper; {what: how many} over all of them."""
    now = now or timezone.now()
    counts = inspections_reap(now=now) | support_sets_reap(now=now)
    counts |= classifier_reap(
        stale_running=now - timedelta(seconds=settings.INSPECTOR_LOST_AFTER),
        stale_queued=now - timedelta(seconds=settings.INSPECTOR_REQUEUE_AFTER),
    )
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts


# The name is the one beat has always sent (the task lived in inspector/inspections/tasks.py).
@shared_task(name="inspector.inspections.tasks.work_reap_task", ignore_result=True)
def work_reap_task() -> None:
    work_reap()
