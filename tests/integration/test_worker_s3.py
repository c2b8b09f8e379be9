"""A real Celery worker process with media on S3-compatible storage (moto's S3 server on loopback): the web side
stores the uploads in the bucket, the worker reads the images and the fitted state from it and writes heatmaps to
it, and nothing touches MEDIA_ROOT."""

from __future__ import annotations

import pytest

from inspector.inspections import services as inspection_services
from tests.s3 import moto_s3

from .conftest import _require_services, celery_worker, files, fitted_product, wait_for_batch, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.backbone, pytest.mark.datasets]


@pytest.fixture
def s3_worker(transactional_db, settings, tmp_path, weights_path):
    """moto's S3 server, the test process's default_storage on it, and a real worker process using it too."""
    _require_services()
    with moto_s3() as endpoint:
        bucket = endpoint.create_bucket()
        settings.STORAGES = endpoint.storages(bucket)
        settings.MEDIA_ROOT = tmp_path / "media-unused"
        env = worker_env(settings, weights_path)
        env = {k: v for k, v in env.items() if not k.startswith(("INSPECTOR_S3", "AWS_"))} | endpoint.env(bucket)
        with celery_worker(env, tmp_path / "worker.log"):
            yield endpoint, bucket


def test_worker_reads_images_and_writes_heatmaps_through_s3_storage(s3_worker, datasets_dir, settings):
    endpoint, bucket = s3_worker
    root = datasets_dir / "mvtec_bottle"
    user, product, support_set = fitted_product(root, shots=3, timeout=240)

    images = (
        sorted((root / "test" / "good").glob("*.png"))[:2] + sorted((root / "test" / "broken_large").glob("*.png"))[:2]
    )
    batch = inspection_services.batch_create(product=product, user=user, files=files(images))
    inspections = wait_for_batch(batch, 300)
    assert [i.status for i in inspections] == ["done"] * 4, [i.error for i in inspections]

    keys = set(endpoint.keys(bucket))
    assert support_set.state_file.name in keys
    assert {i.image.name for i in inspections} <= keys
    assert {i.heatmap.name for i in inspections} <= keys  # written by the worker, into the bucket
    assert max(i.score for i in inspections[:2]) < min(i.score for i in inspections[2:])
    assert not settings.MEDIA_ROOT.exists(), "nothing was written to local disk"
