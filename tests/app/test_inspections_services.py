from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ValidationError

from inspector.inspections import services
from inspector.inspections.models import Inspection
from inspector.inspections.selectors import batch_progress
from inspector.jobs import RetryLater
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


def test_processing_a_missing_inspection_returns_quietly(db, monkeypatch):
    calls = []
    monkeypatch.setattr(services.ml, "inspect", lambda *a, **k: calls.append(a))
    assert services.inspection_process(inspection_id=424242, task_id="t") is None  # no exception: nothing to retry
    assert calls == [] and not Inspection.objects.exists()  # the detector never ran, no row appeared


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


def test_database_trouble_after_the_claim_releases_it_uncounted_for_the_retry(owner, ready_product, monkeypatch):
    from django.db import OperationalError

    batch = services.batch_create(product=ready_product, user=owner, files=[upload("a.png", png_bytes(1))])
    inspection = batch.inspections.get()

    def db_down(*a, **k):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services.ml, "inspect", db_down)
    with pytest.raises(OperationalError):
        services.inspection_process(inspection_id=inspection.pk)
    inspection.refresh_from_db()
    assert inspection.status == "queued" and inspection.attempts == 0  # not the image's fault: not counted
    monkeypatch.undo()
    services.inspection_process(inspection_id=inspection.pk)
    inspection.refresh_from_db()
    assert inspection.status == "done" and inspection.attempts == 1


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
    from inspector.reaper import work_reap

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
    counts = work_reap()  # the lost one was queued recently: it is sent again all the same
    nothing_for_classifiers = {"classifiers_failed": 0, "classifiers_resent": 0, "fits_resent": 0}
    assert counts == {"failed": 1, "requeued": 1, "resent": 1} | nothing_for_classifiers
    poison.refresh_from_db()
    assert poison.status == "failed" and "lost 3 times" in poison.error
    assert sorted(sent) == sorted([lost.pk, waiting.pk])
    again = work_reap()  # not sent again right away
    assert again == {"failed": 0, "requeued": 0, "resent": 0} | nothing_for_classifiers


def _queued(owner, product, n=1):
    from inspector.inspections.tasks import inspection_process_task

    sent = []
    mp = pytest.MonkeyPatch()
    mp.setattr(inspection_process_task, "delay", sent.append)  # queued, not run: the test plays the worker
    try:
        batch = services.batch_create(
            product=product, user=owner, files=[upload(f"{i}.png", png_bytes(i)) for i in range(n)]
        )
    finally:
        mp.undo()
    return list(batch.inspections.order_by("id"))


def test_a_redelivered_task_takes_over_its_own_running_claim_and_no_other_task_does(owner, ready_product):
    (inspection,) = _queued(owner, ready_product)
    # The worker that ran task "t1" was killed mid-image: the row stays running under t1.
    Inspection.objects.filter(pk=inspection.pk).update(status="running", task_id="t1", attempts=1)
    services.inspection_process(inspection_id=inspection.pk, task_id="other")  # a stray duplicate message
    inspection.refresh_from_db()
    assert (inspection.status, inspection.attempts) == ("running", 1)
    services.inspection_process(inspection_id=inspection.pk, task_id="t1")  # acks_late redelivers t1
    inspection.refresh_from_db()
    assert (inspection.status, inspection.attempts, inspection.task_id) == ("done", 2, "t1")


def test_a_worker_lost_on_every_claim_fails_the_image_on_the_claim_after_max_attempts(owner, ready_product):
    (inspection,) = _queued(owner, ready_product)
    Inspection.objects.filter(pk=inspection.pk).update(status="running", task_id="t1", attempts=services.MAX_ATTEMPTS)
    services.inspection_process(inspection_id=inspection.pk, task_id="t1")
    inspection.refresh_from_db()
    assert inspection.status == "failed" and f"lost {services.MAX_ATTEMPTS} times" in inspection.error


def test_an_image_that_crashes_the_detector_fails_at_once_with_the_reason_and_the_others_finish(
    owner, ready_product, monkeypatch
):
    poison, good = _queued(owner, ready_product, n=2)
    real = services.ml.inspect

    def detector(name, **kw):
        if name == poison.image.name:
            raise ValueError("cannot reshape array of size 0")
        return real(name, **kw)

    monkeypatch.setattr(services.ml, "inspect", detector)
    services.inspection_process(inspection_id=poison.pk, task_id="a")  # no exception: nothing to retry
    services.inspection_process(inspection_id=good.pk, task_id="b")
    poison.refresh_from_db()
    good.refresh_from_db()
    assert (poison.status, poison.attempts) == ("failed", 1)
    assert poison.error == "ValueError: cannot reshape array of size 0"
    assert good.status == "done"


def test_memory_errors_are_retried_a_bounded_number_of_times_then_fail_the_image(owner, ready_product, monkeypatch):
    (inspection,) = _queued(owner, ready_product)

    def out_of_memory(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(services.ml, "inspect", out_of_memory)
    for _ in range(services.MAX_ATTEMPTS - 1):
        with pytest.raises(RetryLater):  # the task retries with backoff
            services.inspection_process(inspection_id=inspection.pk, task_id="t")
        inspection.refresh_from_db()
        assert inspection.status == "queued"
    services.inspection_process(inspection_id=inspection.pk, task_id="t")
    inspection.refresh_from_db()
    assert (inspection.status, inspection.attempts) == ("failed", services.MAX_ATTEMPTS)
    assert inspection.error.startswith("MemoryError")


def test_a_result_computed_after_the_claim_was_reaped_is_not_written(owner, ready_product, monkeypatch):
    (inspection,) = _queued(owner, ready_product)
    real = services.ml.inspect

    def slow_detector(name, **kw):  # meanwhile the reaper gave the image to another task
        Inspection.objects.filter(pk=inspection.pk).update(status="running", task_id="new")
        return real(name, **kw)

    monkeypatch.setattr(services.ml, "inspect", slow_detector)
    services.inspection_process(inspection_id=inspection.pk, task_id="old")
    inspection.refresh_from_db()
    assert (inspection.status, inspection.task_id, inspection.score) == ("running", "new", None)


def test_a_file_uploaded_again_to_the_same_product_is_marked_as_a_duplicate_of_the_first(
    owner, team, ready_product, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = services.batch_create(product=ready_product, user=owner, files=[upload("a.png", png_bytes(1))])
        second = services.batch_create(
            product=ready_product,
            user=owner,
            files=[upload("a-again.png", png_bytes(1)), upload("b.png", png_bytes(2)), upload("b2.png", png_bytes(2))],
        )
    original = first.inspections.get()
    again, b, b2 = second.inspections.order_by("id")
    assert (again.duplicate_of_id, b.duplicate_of_id, b2.duplicate_of_id) == (original.pk, None, b.pk)
    assert batch_progress(batch=second).duplicates == 2
    assert batch_progress(batch=second).processed == 3  # still inspected, shown as duplicates
    assert original.duplicate_of_id is None
    other_product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(product=other_product, user=owner, files=[upload("g.png", png_bytes(7))])
    with django_capture_on_commit_callbacks(execute=True):
        elsewhere = services.batch_create(product=other_product, user=owner, files=[upload("a.png", png_bytes(1))])
    assert elsewhere.inspections.get().duplicate_of_id is None  # another product's files are its own


def test_the_reaper_sends_a_fit_whose_worker_was_lost_again_at_once(owner, ready_product, monkeypatch, settings):
    from datetime import timedelta

    from django.utils import timezone

    from inspector.products.services import support_sets_reap
    from inspector.products.tasks import support_set_fit_task

    sent = []
    monkeypatch.setattr(support_set_fit_task, "delay", sent.append)
    support_set = ready_product.support_sets.get()
    # A fit may run up to INSPECTOR_FIT_TIME_LIMIT (DFD trains for minutes): not lost before that.
    running_at = timezone.now() - timedelta(seconds=settings.INSPECTOR_FIT_TIME_LIMIT - 60)
    ready_product.support_sets.update(status="fitting", fit_started_at=running_at)
    assert support_sets_reap(now=timezone.now()) == {"fits_resent": 0} and sent == []
    lost_at = timezone.now() - timedelta(seconds=settings.INSPECTOR_FIT_TIME_LIMIT + 121)
    ready_product.support_sets.update(status="fitting", fit_started_at=lost_at)  # created a moment ago
    assert support_sets_reap(now=timezone.now()) == {"fits_resent": 1}
    support_set.refresh_from_db()
    assert support_set.status == "pending" and sent == [support_set.pk]


def test_the_flagged_verdicts_are_review_and_defective_and_not_a_choice_of_their_own():
    assert Inspection.Verdict.FLAGGED == (Inspection.Verdict.REVIEW, Inspection.Verdict.DEFECTIVE)
    assert Inspection.Verdict.values == ["good", "review", "defective"]


def test_a_flagged_image_runs_the_steps_that_follow_detection_and_keeps_its_result_if_one_fails(
    owner, ready_product, monkeypatch, settings
):
    real = services.ml.inspect
    monkeypatch.setattr(services.ml, "inspect", lambda *a, **k: dataclasses.replace(real(*a, **k), verdict="defective"))
    settings.INSPECTOR_AFTER_FLAGGED = [f"{__name__}._step_that_fails", f"{__name__}._step_that_records"]
    _steps_run.clear()
    (inspection,) = _queued(owner, ready_product)
    services.inspection_process(inspection_id=inspection.pk, task_id="t")
    inspection.refresh_from_db()
    assert (inspection.status, inspection.verdict) == ("done", "defective")
    assert _steps_run == [inspection.pk]  # the failing step stopped neither the next one nor the result


_steps_run: list[int] = []


def _step_that_fails(*, inspection_id: int) -> None:
    raise RuntimeError("classifier payload missing")


def _step_that_records(*, inspection_id: int) -> None:
    _steps_run.append(inspection_id)
