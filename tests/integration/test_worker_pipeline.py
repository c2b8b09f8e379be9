"""A real batch through a real Celery worker process, PostgreSQL, Redis and the real detector."""

from __future__ import annotations

import pytest

from inspector.inspections import services as inspection_services
from inspector.inspections.models import Inspection

from .conftest import files, fitted_product, wait_for_batch

pytestmark = [pytest.mark.integration, pytest.mark.backbone, pytest.mark.datasets]


def test_real_batch_of_bottles_is_processed_once_each_by_the_worker(worker, datasets_dir, settings):
    root = datasets_dir / "mvtec_bottle"
    user, product, _ = fitted_product(root, shots=4, timeout=180)

    goods = sorted((root / "test" / "good").glob("*.png"))[:4]
    broken = sorted((root / "test" / "broken_large").glob("*.png"))[:4]
    batch = inspection_services.batch_create(product=product, user=user, files=files(goods + broken), lot="IT-1")
    inspections = wait_for_batch(batch, 300)
    assert [i.status for i in inspections] == ["done"] * 8, [i.error for i in inspections]
    assert all(i.attempts == 1 for i in inspections)  # each processed exactly once
    assert all(i.heatmap.storage.exists(i.heatmap.name) for i in inspections)
    good_scores = [i.score for i in inspections[:4]]
    broken_scores = [i.score for i in inspections[4:]]
    assert max(good_scores) < min(broken_scores)
    assert [i.verdict for i in inspections[4:]].count(Inspection.Verdict.GOOD) == 0
