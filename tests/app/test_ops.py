"""/healthz (no login, dependencies checked) and /metrics (Prometheus, staff or bearer token)."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from inspector.celery import app as celery_app
from inspector.inspections import services as inspection_services
from inspector.ops import selectors
from inspector.products import services as product_services

from .factories import ProductFactory, UserFactory, png_bytes, upload

REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")  # its queue keys are deleted


@pytest.fixture
def broker_url(monkeypatch):
    """Point the Celery app at another broker for one test (Celery reads CELERY_BROKER_URL from the environment
    before its own configuration, so both are set)."""
    saved = celery_app.conf.broker_url

    def use(url: str) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        celery_app.conf.broker_url = url

    yield use
    celery_app.conf.broker_url = saved


@pytest.fixture
def redis_broker(broker_url):
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_TEST_URL}: {exc}")
    broker_url(REDIS_TEST_URL)
    redis.Redis.from_url(REDIS_TEST_URL).delete(*selectors.queue_names())
    yield
    redis.Redis.from_url(REDIS_TEST_URL).delete(*selectors.queue_names())


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def processed_batch(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(
            product=product, user=owner, files=[upload("g.png", png_bytes(1)), upload("h.png", png_bytes(2))]
        )
    with django_capture_on_commit_callbacks(execute=True):
        return inspection_services.batch_create(
            product=product, user=owner, files=[upload("a.png", png_bytes(3)), upload("b.png", png_bytes(4))]
        )


def test_healthz_answers_anonymous_users_with_every_check(client, db):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert all(c["ok"] for c in body["checks"].values())
    assert "no-cache" in response["Cache-Control"]


def test_healthz_is_503_when_the_broker_is_unreachable(client, db, broker_url):
    broker_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and not body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]


def test_healthz_refuses_post(client, db):
    assert client.post(reverse("healthz")).status_code == 405


def test_metrics_needs_credentials(client, db):
    response = client.get(reverse("metrics"))
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_is_forbidden_to_non_staff_users(client, owner):
    client.force_login(owner)
    assert client.get(reverse("metrics")).status_code == 403


def test_metrics_refuses_a_wrong_token_and_any_token_when_none_is_configured(client, db, settings):
    settings.INSPECTOR_METRICS_TOKEN = ""
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer ").status_code == 403
    settings.INSPECTOR_METRICS_TOKEN = "s3cret-token"
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer wrong").status_code == 403


def test_metrics_accepts_the_configured_bearer_token(client, db, settings):
    settings.INSPECTOR_METRICS_TOKEN = "s3cret-token"
    response = client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")


def test_metrics_count_inspections_by_status_and_their_durations(client, staff, processed_batch):
    client.force_login(staff)
    response = client.get(reverse("metrics"))
    assert response.status_code == 200
    text = response.content.decode()
    assert 'inspector_inspections{status="done"} 2.0' in text
    assert 'inspector_inspections{status="queued"} 0.0' in text
    assert "inspector_inspection_duration_seconds_count 2.0" in text
    assert 'inspector_inspection_duration_seconds_bucket{le="+Inf"} 2.0' in text
    assert "inspector_detect_seconds_count 2.0" in text
    assert 'inspector_support_sets{status="ready"} 1.0' in text
    assert "inspector_oldest_queued_seconds 0.0" in text
    assert "inspector_broker_up 1.0" in text


def test_metrics_still_answer_when_the_broker_is_down(client, staff, broker_url):
    broker_url("redis://127.0.0.1:1/0")
    client.force_login(staff)
    response = client.get(reverse("metrics"))
    assert response.status_code == 200
    assert "inspector_broker_up 0.0" in response.content.decode()


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_queue_lengths_count_waiting_messages_per_queue_on_redis(redis_broker, settings):
    settings.INSPECTOR_DETECT_QUEUE = "gpu"
    with celery_app.connection_for_write() as conn:  # the Redis test broker, not the app's cached pool
        for _ in range(3):
            celery_app.send_task(
                "inspector.inspections.tasks.inspection_process_task", args=[0], queue="gpu", connection=conn
            )
        celery_app.send_task("inspector.products.tasks.support_set_fit_task", args=[0], queue="fit", connection=conn)
    assert selectors.queue_lengths() == {"celery": 0, "fit": 1, "gpu": 3}


def test_detection_is_routed_to_the_configured_queue(settings):
    route = settings.CELERY_TASK_ROUTES["inspector.inspections.tasks.inspection_process_task"]
    assert route == {"queue": settings.INSPECTOR_DETECT_QUEUE}
