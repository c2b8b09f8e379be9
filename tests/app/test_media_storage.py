"""Media storage is chosen by settings alone: local disk (embedded default) or S3-compatible object storage.
The same tests run against the storage API with each backend: local, moto's S3 server, and a real MinIO when
INSPECTOR_TEST_MINIO_URL is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from inspector.inspections import services as inspection_services
from inspector.products import services as product_services
from tests.s3 import minio_from_env, moto_s3

from .factories import ProductFactory, png_bytes, upload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def moto_endpoint():
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "moto", "minio"])
def backend(request, settings, tmp_path):
    """Selects the media backend for one test; yields a function listing what the backend holds."""
    settings.MEDIA_ROOT = tmp_path / "media"
    if request.param == "local":
        yield lambda: sorted(
            str(p.relative_to(settings.MEDIA_ROOT)) for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()
        )
        return
    if request.param == "moto":
        endpoint = request.getfixturevalue("moto_endpoint")
    else:
        endpoint = minio_from_env()
        if endpoint is None:
            pytest.skip("no MinIO: set INSPECTOR_TEST_MINIO_URL=http://KEY:SECRET@HOST:PORT to test against one")
    bucket = endpoint.create_bucket()
    settings.STORAGES = endpoint.storages(bucket)
    yield lambda: endpoint.keys(bucket)
    assert not settings.MEDIA_ROOT.exists() or not any(settings.MEDIA_ROOT.rglob("*.*")), "wrote to local disk"


def test_storage_round_trip_save_open_size_exists_delete(backend):
    name = default_storage.save("inspections/a.bin", ContentFile(b"\x00\x01payload"))
    assert default_storage.exists(name)
    assert default_storage.size(name) == 9
    with default_storage.open(name, "rb") as fh:
        assert fh.read() == b"\x00\x01payload"
    assert backend() == [name]
    default_storage.delete(name)
    assert not default_storage.exists(name) and backend() == []


def test_saving_an_existing_name_never_overwrites(backend):
    first = default_storage.save("heatmaps/x.jpg", ContentFile(b"one"))
    second = default_storage.save("heatmaps/x.jpg", ContentFile(b"two"))
    assert first != second
    with default_storage.open(first, "rb") as fh:
        assert fh.read() == b"one"


def test_opening_a_missing_file_raises_file_not_found(backend):
    with pytest.raises(FileNotFoundError):
        default_storage.open("inspections/missing.png", "rb").read()


def test_a_batch_stores_images_heatmaps_and_support_state_in_the_backend(
    backend, owner, team, other, client, django_capture_on_commit_callbacks
):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        support_set, _ = product_services.support_set_create(
            product=product, user=owner, files=[upload("g.png", png_bytes(1)), upload("h.png", png_bytes(2))]
        )
    with django_capture_on_commit_callbacks(execute=True):
        batch = inspection_services.batch_create(
            product=product, user=owner, files=[upload("q.png", png_bytes(3)), upload("d.png", png_bytes(4, True))]
        )
    inspections = list(batch.inspections.order_by("id"))
    assert [i.status for i in inspections] == ["done", "done"], [i.error for i in inspections]
    support_set.refresh_from_db()
    stored = backend()
    expected = {
        support_set.state_file.name,
        *(i.image.name for i in inspections),
        *(i.heatmap.name for i in inspections),
    }
    expected |= {s.image.name for s in support_set.images.all()}
    assert expected <= set(stored), sorted(expected - set(stored))

    # The access-checked media view serves them from the backend, to the owner's team only.
    client.force_login(owner)
    response = client.get(reverse("media", args=[inspections[0].heatmap.name]))
    assert response.status_code == 200 and b"".join(response.streaming_content)[:2] == b"\xff\xd8"  # a JPEG
    client.force_login(other)
    assert client.get(reverse("media", args=[inspections[0].image.name])).status_code == 404  # another team: absent


def _storage_class(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INSPECTOR_S3", "INSPECTOR_MEDIA"))}
    code = (
        "import django; django.setup(); from django.core.files.storage import storages; s = storages['default'];"
        "print(type(s).__name__, getattr(s, 'bucket_name', '-'), getattr(s, 'endpoint_url', '-'))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ | env | {"DJANGO_SETTINGS_MODULE": "inspector.settings"},
        capture_output=True,
        text=True,
    )


def test_local_disk_is_the_default():
    result = _storage_class()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "FileSystemStorage"


def test_s3_is_selected_by_environment_alone():
    result = _storage_class(
        INSPECTOR_MEDIA_STORAGE="s3", INSPECTOR_S3_BUCKET="media", INSPECTOR_S3_ENDPOINT_URL="http://minio:9000"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["S3Storage", "media", "http://minio:9000"]


def test_s3_without_a_bucket_fails_loudly():
    result = _storage_class(INSPECTOR_MEDIA_STORAGE="s3")
    assert result.returncode != 0 and "needs INSPECTOR_S3_BUCKET" in result.stderr


def test_an_unknown_storage_fails_loudly():
    result = _storage_class(INSPECTOR_MEDIA_STORAGE="ftp")
    assert result.returncode != 0 and "INSPECTOR_MEDIA_STORAGE='ftp' is not one of local, s3" in result.stderr
