from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from detection import Detector, DetectorConfig
from inspector import ml
from inspector.celery import app as celery_app
from tests.detection.helpers import random_resnet

from .factories import TeamFactory, UserFactory


@pytest.fixture(scope="session")
def small_detector() -> Detector:
    """A random-weight detector at 64 px: the real code path, fast, no weights file needed."""
    return Detector(DetectorConfig(image_size=64), resnet=random_resnet(), device="cpu")


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
