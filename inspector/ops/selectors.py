"""Reads for operations: is each dependency reachable, how long are the queues, how is the work going.

Everything here is computed from the shared database and broker at request time, so any web server of a
scaled-out deployment answers for the whole deployment (all workers on all machines), not for itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.utils import timezone
from kombu.exceptions import ChannelError

from inspector.inspections.models import Inspection
from inspector.products.models import SupportSet

BROKER_TIMEOUT_S = 3.0
# Seconds one image takes in a worker (claim to result): from ~0.1 s on a GPU to minutes for slow methods on CPU.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    ms: float


def _timed(fn) -> Check:
    start = time.perf_counter()
    try:
        detail = fn() or "ok"
        ok = True
    except Exception as exc:  # a health check reports every failure, whatever its type
        detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
    return Check(ok, detail, (time.perf_counter() - start) * 1e3)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker() -> None:
    from inspector.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)


def _storage() -> None:
    default_storage.exists("healthz-probe")  # a round trip to the disk or the object store, the answer unused


def health_checks() -> dict[str, Check]:
    return {"database": _timed(_database), "broker": _timed(_broker), "storage": _timed(_storage)}


def queue_names() -> list[str]:
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, "fit", settings.INSPECTOR_DETECT_QUEUE})


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each queue (not counting those a worker has prefetched); None: broker unreachable."""
    from inspector.celery import app

    out = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
            channel = conn.default_channel
            for name in queue_names():
                try:
                    out[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:  # never declared, or empty and gone (Redis deletes empty lists)
                    out[name] = 0
    except Exception:  # reported as broker_up 0; metrics must still answer
        return None
    return out


@dataclass(frozen=True)
class WorkStats:
    inspections_by_status: dict[str, int]
    support_sets_by_status: dict[str, int]
    oldest_queued_seconds: float
    duration_buckets: list[tuple[float, int]]  # cumulative counts of done inspections, seconds <= bound
    duration_count: int
    duration_sum_seconds: float
    detect_count: int
    detect_sum_seconds: float


def work_stats() -> WorkStats:
    """Three aggregate queries over the inspections table, whatever its size."""
    by_status = {s: 0 for s in Inspection.Status.values}
    by_status |= dict(Inspection.objects.values_list("status").annotate(n=Count("id")).order_by())
    sets = {s: 0 for s in SupportSet.Status.values}
    sets |= dict(SupportSet.objects.values_list("status").annotate(n=Count("id")).order_by())
    oldest = Inspection.objects.filter(status=Inspection.Status.QUEUED).aggregate(t=Min("queued_at"))["t"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0

    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    finished = Inspection.objects.filter(
        status=Inspection.Status.DONE, started_at__isnull=False, finished_at__isnull=False
    ).annotate(duration=duration)
    aggregates = {
        f"le{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=b))) for i, b in enumerate(DURATION_BUCKETS)
    }
    row = finished.aggregate(
        count=Count("id"), total=Sum("duration"), detect_n=Count("detect_ms"), detect_ms=Sum("detect_ms"), **aggregates
    )
    return WorkStats(
        inspections_by_status=by_status,
        support_sets_by_status=sets,
        oldest_queued_seconds=max(age, 0.0),
        duration_buckets=[(b, row[f"le{i}"]) for i, b in enumerate(DURATION_BUCKETS)],
        duration_count=row["count"],
        duration_sum_seconds=row["total"].total_seconds() if row["total"] else 0.0,
        detect_count=row["detect_n"],
        detect_sum_seconds=(row["detect_ms"] or 0.0) / 1e3,
    )
