from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from inspector.inspections import services
from inspector.inspections.models import Inspection
from inspector.inspections.selectors import batch_progress
from inspector.products import services as product_services

from .factories import ProductFactory, png_bytes, upload


@pytest.fixture
def ready_product(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(
            product=product, user=owner, files=[upload(f"g{i}.png", png_bytes(i)) for i in range(3)]
        )
    return product


def test_batch_without_a_ready_support_set_is_refused(owner, team):
    with pytest.raises(ValidationError, match="no ready support set"):
        services.batch_create(product=ProductFactory(team=team), user=owner, files=[upload("a.png", png_bytes(1))])


def test_batch_processes_every_accepted_image_and_lists_refused_ones(
    owner, ready_product, django_capture_on_commit_callbacks
):
    files = [upload("good.png", png_bytes(10)), upload("bad.png", png_bytes(11, defect=True)), upload("x.png", b"x")]
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.batch_create(product=ready_product, user=owner, files=files, lot="L7")
    assert batch.total == 2 and batch.lot == "L7"
    assert [(r.original_name, r.reason) for r in batch.rejected_files.all()] == [("x.png", "not an image")]
    inspections = list(batch.inspections.order_by("id"))
    for i in inspections:
        assert i.status == Inspection.Status.DONE, i.error
        assert i.support_set == batch.support_set
        assert i.verdict in ("good", "review", "defective") and i.heatmap.name and i.detect_ms > 0
        assert i.nearest_support is not None and i.nearest_support.support_set == batch.support_set
    assert inspections[1].score > inspections[0].score
    progress = batch_progress(batch=batch)
    assert (progress.processed, progress.failed, progress.finished) == (2, 0, True)


def test_inspection_is_claimed_once(owner, ready_product, monkeypatch):
    batch = services.batch_create(product=ready_product, user=owner, files=[upload("a.png", png_bytes(1))])
    inspection = batch.inspections.get()
    calls = []
    real = services.ml.inspect
    monkeypatch.setattr(services.ml, "inspect", lambda *a, **k: calls.append(a) or real(*a, **k))
    services.inspection_process(inspection_id=inspection.pk)
    services.inspection_process(inspection_id=inspection.pk)
    assert len(calls) == 1
    inspection.refresh_from_db()
    assert inspection.status == "done" and inspection.attempts == 1


def test_processing_a_missing_inspection_returns_quietly(db):
    services.inspection_process(inspection_id=424242)


def test_a_poison_image_fails_with_its_reason_and_the_batch_goes_on(owner, ready_product, monkeypatch):
    batch = services.batch_create(
        product=ready_product, user=owner, files=[upload("a.png", png_bytes(1)), upload("b.png", png_bytes(2))]
    )
    first, second = batch.inspections.order_by("id")
    real = services.ml.inspect

    def poison(name, **kw):
        if name == first.image.name:
            raise RuntimeError("detector crashed on this image")
        return real(name, **kw)

    monkeypatch.setattr(services.ml, "inspect", poison)
    services.inspection_process(inspection_id=first.pk)
    services.inspection_process(inspection_id=second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "failed" and "detector crashed" in first.error
    assert second.status == "done"
    assert batch_progress(batch=batch).finished


def test_an_upload_over_the_image_limit_is_refused_whole_and_leaves_no_files(owner, ready_product, settings):
    settings.INSPECTOR_MAX_FILES_PER_UPLOAD = 2
    media = settings.MEDIA_ROOT / "inspections"

    def files():
        return sorted(p for p in media.rglob("*") if p.is_file())

    before = files()
    with pytest.raises(ValidationError, match="more than 2 images"):
        services.batch_create(
            product=ready_product, user=owner, files=[upload(f"{i}.png", png_bytes(i)) for i in range(3)]
        )
    assert not ready_product.batches.exists()
    assert files() == before


def test_database_trouble_after_the_claim_releases_it_for_the_retry(owner, ready_product, monkeypatch):
    from django.db import OperationalError

    batch = services.batch_create(product=ready_product, user=owner, files=[upload("a.png", png_bytes(1))])
    inspection = batch.inspections.get()

    def db_down(*a, **k):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services.ml, "inspect", db_down)
    with pytest.raises(OperationalError):
        services.inspection_process(inspection_id=inspection.pk)
    inspection.refresh_from_db()
    assert inspection.status == "queued"  # not stuck in running: the retry can claim it
    monkeypatch.undo()
    services.inspection_process(inspection_id=inspection.pk)
    inspection.refresh_from_db()
    assert inspection.status == "done" and inspection.attempts == 2


def test_a_broker_error_at_enqueue_keeps_the_committed_batch_and_its_files(
    owner, ready_product, monkeypatch, django_capture_on_commit_callbacks
):
    from inspector.inspections.tasks import inspection_process_task

    def broker_down(_id):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(inspection_process_task, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.batch_create(product=ready_product, user=owner, files=[upload("a.png", png_bytes(1))])
    inspection = batch.inspections.get()
    assert inspection.status == "queued"
    assert inspection.image.storage.exists(inspection.image.name)  # the reaper will send it again


def test_the_reaper_requeues_lost_work_fails_repeat_offenders_and_resends_old_queued_items(
    owner, ready_product, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from inspector.inspections.tasks import inspection_process_task

    sent = []
    monkeypatch.setattr(inspection_process_task, "delay", sent.append)
    batch = services.batch_create(
        product=ready_product, user=owner, files=[upload(f"{i}.png", png_bytes(i)) for i in range(3)]
    )
    lost, poison, waiting = batch.inspections.order_by("id")
    long_ago = timezone.now() - timedelta(hours=2)
    Inspection.objects.filter(pk=lost.pk).update(status="running", started_at=long_ago, attempts=1)
    Inspection.objects.filter(pk=poison.pk).update(status="running", started_at=long_ago, attempts=3)
    Inspection.objects.filter(pk=waiting.pk).update(queued_at=long_ago)
    counts = services.work_reap()  # the lost one was queued recently: it is sent again all the same
    nothing_for_classifiers = {"classifiers_failed": 0, "classifiers_resent": 0}
    assert counts == {"failed": 1, "requeued": 1, "resent": 1} | nothing_for_classifiers
    poison.refresh_from_db()
    assert poison.status == "failed" and "lost 3 times" in poison.error
    assert sorted(sent) == sorted([lost.pk, waiting.pk])
    again = services.work_reap()  # not sent again right away
    assert again == {"failed": 0, "requeued": 0, "resent": 0} | nothing_for_classifiers
