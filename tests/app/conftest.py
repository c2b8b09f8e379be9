from __future__ import annotations

import pytest
from django.db import connections
from rest_framework.test import APIClient

from detection import Detector, DetectorConfig
from detection.dfd import DFDConfig
from inspector import ml
from inspector.celery import app as celery_app
from inspector.inspections.models import Batch
from inspector.products.models import SupportSet
from inspector.review import services as review_services
from inspector.review.defect_types import defect_type_create
from tests.detection.helpers import random_resnet

from . import review_data
from .chromium import CHROMIUM, CHROMIUM_ARGS
from .factories import ProductFactory, TeamFactory, UserFactory


@pytest.fixture(scope="session")
def small_detector() -> Detector:
    """A random-weight detector at 64 px: the real code path, fast, no weights file needed."""
    small_dfd = DFDConfig(max_augmented=8, max_steps=10, adaptor_dim=32, hidden=32, perlin_dim=16)
    return Detector(DetectorConfig(image_size=64, method_configs=(small_dfd,)), resnet=random_resnet(), device="cpu")


@pytest.fixture(autouse=True)
def app_env(settings, tmp_path, small_detector):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.INSPECTOR_IMAGE_SIZE = 64
    ml.set_detector(small_detector)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    ml.set_detector(None)


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def team(owner):
    return TeamFactory(members=[owner])


@pytest.fixture
def other(db):
    user = UserFactory()
    TeamFactory(members=[user])
    return user


@pytest.fixture
def api(owner) -> APIClient:
    client = APIClient()
    client.force_authenticate(owner)
    return client


# ------------------------------------------------------------------------------- review loop (see review_data.py)


@pytest.fixture
def product(team):
    return ProductFactory(team=team)


@pytest.fixture
def batch(product, owner):
    support_set = SupportSet.objects.create(product=product, version=1, method="fastrecon", status="ready")
    return Batch.objects.create(product=product, support_set=support_set, uploaded_by=owner, lot="L1", total=0)


@pytest.fixture
def types(product):
    return {name: defect_type_create(product=product, name=name) for name in review_data.TYPES}


@pytest.fixture
def labelled(batch, types, owner, settings):
    """2 confirmed examples per type (6 decisions) and 12 unreviewed flagged images (4 per type)."""
    settings.INSPECTOR_RETRAIN_EVERY = 1000  # no automatic training here unless a test asks
    rows = {}
    for k, name in enumerate(review_data.TYPES):
        for j in range(2):
            i = review_data.flagged(batch, k, seed=10 * k + j)
            review_services.review_decide(
                inspection_id=i.pk, user=owner, verdict="defective", defect_type=types[name], expected_version=0
            )
            rows.setdefault(name, []).append(i)
    queries = [review_data.flagged(batch, k, seed=1000 + 10 * k + j) for k in range(3) for j in range(4)]
    return rows, queries


# --------------------------------------------------------------------------------------------- browser tests


@pytest.fixture
def page(live_server, monkeypatch):
    """A headless Chromium page on the live server (browser tests only; they skip without Chromium)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls in tests are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server answers each request in a new thread: persistent connections would outlive them.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        page.goto("about:blank")  # no request in flight when the live server and the test database go
        browser.close()
    connections.close_all()
    _end_live_server_sessions()


def _end_live_server_sessions() -> None:
    """A live-server thread whose request the browser abandoned (an image preload cut short by the next page)
    never reaches request_finished, so its PostgreSQL session outlives it and blocks dropping the test
    database. End such sessions of this test database (PostgreSQL only; SQLite has no sessions)."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.close()
