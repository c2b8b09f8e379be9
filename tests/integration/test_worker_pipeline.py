"""A real batch through a real Celery worker process, PostgreSQL, Redis and the real detector."""

from __future__ import annotations

import io

import pytest

from inspector.inspections import services as inspection_services
from inspector.inspections.models import Inspection
from inspector.products import services as product_services
from inspector.products.models import SupportSet
from tests.app.factories import TeamFactory, UserFactory

from .conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.backbone, pytest.mark.datasets]


def _files(paths):
    return [(p.name, io.BytesIO(p.read_bytes())) for p in paths]


def test_real_batch_of_bottles_is_processed_once_each_by_the_worker(worker, datasets_dir, settings):
    root = datasets_dir / "mvtec_bottle"
    user = UserFactory()
    TeamFactory(members=[user])
    product = product_services.product_create(user=user, name="Bottle")
    support = sorted((root / "train" / "good").glob("*.png"))[:4]
    support_set, _ = product_services.support_set_create(product=product, user=user, files=_files(support))
    wait_until(lambda: SupportSet.objects.get(pk=support_set.pk).status in ("ready", "failed"), 180, "fitting")
    support_set.refresh_from_db()
    assert support_set.status == "ready", support_set.error

    goods = sorted((root / "test" / "good").glob("*.png"))[:4]
    broken = sorted((root / "test" / "broken_large").glob("*.png"))[:4]
    batch = inspection_services.batch_create(product=product, user=user, files=_files(goods + broken), lot="IT-1")
    wait_until(
        lambda: not batch.inspections.filter(status__in=["queued", "running"]).exists(), 300, "the batch to finish"
    )
    inspections = list(batch.inspections.order_by("id"))
    assert [i.status for i in inspections] == ["done"] * 8, [i.error for i in inspections]
    assert all(i.attempts == 1 for i in inspections)  # each processed exactly once
    assert all(i.heatmap.storage.exists(i.heatmap.name) for i in inspections)
    good_scores = [i.score for i in inspections[:4]]
    broken_scores = [i.score for i in inspections[4:]]
    assert max(good_scores) < min(broken_scores)
    assert [i.verdict for i in inspections[4:]].count(Inspection.Verdict.GOOD) == 0
