from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def _require_services() -> None:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://... (.ci/run does)")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs Redis as the Celery broker: set CELERY_BROKER_URL=redis://... (.ci/run does)")
    import redis

    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {settings.CELERY_BROKER_URL}: {exc}")


def worker_env(settings, weights_path) -> dict[str, str]:
    """The environment of a worker process on the test database, the test broker and the test's settings."""
    db = settings.DATABASES["default"]
    return os.environ | {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "INSPECTOR_WEIGHTS": str(weights_path),
        "INSPECTOR_IMAGE_SIZE": str(settings.INSPECTOR_IMAGE_SIZE),
    }


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log_path: Path):
    """A real `celery worker` process (both queues, one slot) with `env`, its output in log_path; the queues are
    purged before it starts and after it is stopped (SIGTERM to its process group, SIGKILL after 20 s)."""
    from inspector.celery import app

    app.conf.task_always_eager = False
    app.control.purge()  # nothing left over from an earlier run
    command = [sys.executable, "-m", "celery", "-A", "inspector", "worker", "-Q", "celery,fit", "-c", "1"]
    command += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            app.control.purge()


@pytest.fixture
def worker(transactional_db, settings, tmp_path, weights_path):
    """A real Celery worker process on the test database and the Redis broker; stopped and cleaned after."""
    _require_services()
    settings.MEDIA_ROOT = tmp_path / "media"
    with celery_worker(worker_env(settings, weights_path), tmp_path / "worker.log") as proc:
        yield proc


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def files(paths):
    """(name, file) pairs as the upload services take them."""
    return [(p.name, io.BytesIO(p.read_bytes())) for p in paths]


def fitted_product(root: Path, shots: int, timeout: float):
    """A user in a team and a product whose first `shots` train/good images of `root` are fitted by the worker:
    (user, product, support_set), the support set ready."""
    from inspector.products import services as product_services
    from inspector.products.models import SupportSet
    from tests.app.factories import TeamFactory, UserFactory

    user = UserFactory()
    TeamFactory(members=[user])
    product = product_services.product_create(user=user, name="Bottle")
    support = sorted((root / "train" / "good").glob("*.png"))[:shots]
    support_set, _ = product_services.support_set_create(product=product, user=user, files=files(support))
    wait_until(lambda: SupportSet.objects.get(pk=support_set.pk).status in ("ready", "failed"), timeout, "fitting")
    support_set.refresh_from_db()
    assert support_set.status == "ready", support_set.error
    return user, product, support_set


def wait_for_batch(batch, timeout: float) -> list:
    """Wait until no inspection of the batch is queued or running; its inspections in upload order."""
    wait_until(lambda: not batch.inspections.filter(status__in=["queued", "running"]).exists(), timeout, "the batch")
    return list(batch.inspections.order_by("id"))
