from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from inspector.products import services
from inspector.products.models import SupportSet

from .factories import ProductFactory, png_bytes, upload


def test_product_create_puts_the_product_in_the_users_team(owner, team):
    product = services.product_create(user=owner, name="  Bottle ")
    assert product.name == "Bottle" and product.team == team


def test_a_user_without_team_gets_a_personal_one(owner):
    product = services.product_create(user=owner, name="Cap")
    assert list(product.team.members.all()) == [owner]


def test_duplicate_or_empty_product_names_are_refused(owner, team):
    services.product_create(user=owner, name="Bottle")
    with pytest.raises(ValidationError):
        services.product_create(user=owner, name="Bottle")
    with pytest.raises(ValidationError):
        services.product_create(user=owner, name="   ")


def test_support_upload_creates_a_new_version_and_fits_it(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        first, rejected = services.support_set_create(
            product=product,
            user=owner,
            files=[upload("a.png", png_bytes(1)), upload("b.png", png_bytes(2)), upload("bad.png", b"xx")],
        )
    assert [r.name for r in rejected] == ["bad.png"]
    first.refresh_from_db()
    assert first.version == 1 and first.status == SupportSet.Status.READY
    assert first.images.count() == 2
    assert 0 < first.thresholds["good_max"] < first.thresholds["defective_min"]
    assert first.state_file.name
    with django_capture_on_commit_callbacks(execute=True):
        second, _ = services.support_set_create(product=product, user=owner, files=[upload("c.png", png_bytes(3))])
    second.refresh_from_db()
    assert second.version == 2 and second.thresholds["rule"] == "augmented-single"


def test_upload_with_no_usable_image_is_refused_with_the_reasons(owner, team):
    product = ProductFactory(team=team)
    with pytest.raises(ValidationError, match="empty.png: empty file"):
        services.support_set_create(product=product, user=owner, files=[upload("empty.png", b"")])
    assert not product.support_sets.exists()


def test_fit_is_claimed_once(owner, team, django_capture_on_commit_callbacks, monkeypatch):
    product = ProductFactory(team=team)
    support_set, _ = services.support_set_create(product=product, user=owner, files=[upload("a.png", png_bytes(1))])
    calls = []
    real = services.ml.fit_support

    def counted(names, method, progress=None):
        calls.append(names)
        return real(names, method, progress)

    monkeypatch.setattr(services.ml, "fit_support", counted)
    services.support_set_fit(support_set_id=support_set.pk)
    services.support_set_fit(support_set_id=support_set.pk)
    assert len(calls) == 1


def test_fit_of_a_missing_support_set_returns_quietly(db, monkeypatch):
    calls = []
    monkeypatch.setattr(services.ml, "fit_support", lambda *a, **k: calls.append(a))
    assert services.support_set_fit(support_set_id=987654) is None  # no exception: nothing to retry
    assert calls == [] and not SupportSet.objects.exists()  # nothing was fitted, no row appeared


def test_a_failing_fit_is_visible_with_its_reason(owner, team, monkeypatch):
    product = ProductFactory(team=team)
    support_set, _ = services.support_set_create(product=product, user=owner, files=[upload("a.png", png_bytes(1))])

    def boom(names, method, progress=None):
        raise FileNotFoundError("backbone weights not found; run make setup")

    monkeypatch.setattr(services.ml, "fit_support", boom)
    services.support_set_fit(support_set_id=support_set.pk)
    support_set.refresh_from_db()
    assert support_set.status == SupportSet.Status.FAILED
    assert "make setup" in support_set.error


@pytest.mark.parametrize("method", ["patchcore", "patchcore_plus", "dfd"])
def test_switching_the_detector_refits_the_good_images_as_a_new_version_with_it(
    owner, team, method, django_capture_on_commit_callbacks
):
    from inspector.inspections import services as inspection_services

    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        first, _ = services.support_set_create(
            product=product, user=owner, files=[upload(f"g{i}.png", png_bytes(i)) for i in range(3)]
        )
    assert first.method == "fastrecon"
    with django_capture_on_commit_callbacks(execute=True):
        refit = services.product_detector_set(product=product, user=owner, method=method)
    refit = SupportSet.objects.get(pk=refit.pk)
    assert (refit.version, refit.method, refit.status) == (2, method, "ready")
    assert list(refit.images.values_list("image", flat=True)) == list(first.images.values_list("image", flat=True))
    product.refresh_from_db()
    assert product.method == method
    with django_capture_on_commit_callbacks(execute=True):
        batch = inspection_services.batch_create(
            product=product, user=owner, files=[upload("a.png", png_bytes(9)), upload("b.png", png_bytes(8, True))]
        )
    good, bad = batch.inspections.order_by("id")
    assert batch.support_set == refit and good.status == bad.status == "done"
    assert bad.score > good.score
    assert services.product_detector_set(product=product, user=owner, method=method) is None  # already in use
    with pytest.raises(ValidationError, match="detector must be one of"):
        services.product_detector_set(product=product, user=owner, method="winclip")


def test_fit_progress_is_recorded_on_the_support_set_at_most_every_two_seconds(owner, team, monkeypatch):
    product = ProductFactory(team=team)
    support_set = SupportSet.objects.create(product=product, version=1, method="dfd", status="fitting")
    clock = [100.0]
    monkeypatch.setattr(services.time, "monotonic", lambda: clock[0])
    write = services._progress_writer(support_set.pk)
    write(0.4, "training step 4/10")
    support_set.refresh_from_db()
    assert (support_set.progress, support_set.progress_message) == (0.4, "training step 4/10")
    clock[0] += 1.0
    write(0.5, "training step 5/10")  # too soon: not written
    support_set.refresh_from_db()
    assert support_set.progress == 0.4
    clock[0] += 1.5
    write(0.6, "training step 6/10")
    support_set.refresh_from_db()
    assert support_set.progress == 0.6


def test_a_dfd_fit_ends_ready_with_full_progress_and_a_fit_past_the_time_limit_fails_visibly(
    owner, team, monkeypatch, django_capture_on_commit_callbacks
):
    from celery.exceptions import SoftTimeLimitExceeded

    product = ProductFactory(team=team, detector_method="dfd")
    with django_capture_on_commit_callbacks(execute=True):
        support_set, _ = services.support_set_create(
            product=product, user=owner, files=[upload(f"g{i}.png", png_bytes(i)) for i in range(2)]
        )
    support_set.refresh_from_db()
    assert (support_set.method, support_set.status, support_set.progress) == ("dfd", "ready", 1.0)

    def too_slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services.ml, "fit_support", too_slow)
    with django_capture_on_commit_callbacks(execute=True):
        slow, _ = services.support_set_create(
            product=product, user=owner, files=[upload(f"h{i}.png", png_bytes(i)) for i in range(2)]
        )
    slow.refresh_from_db()
    assert slow.status == "failed" and "INSPECTOR_FIT_TIME_LIMIT" in slow.error


def test_a_broker_error_during_a_fit_releases_it_to_pending_for_the_retry(owner, team, monkeypatch):
    from inspector.jobs import TRANSIENT_ERRORS

    product = ProductFactory(team=team)
    support_set, _ = services.support_set_create(product=product, user=owner, files=[upload("a.png", png_bytes(1))])

    def broker_down(names, method, progress=None):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(services.ml, "fit_support", broker_down)
    with pytest.raises(TRANSIENT_ERRORS):  # the task retries it with backoff
        services.support_set_fit(support_set_id=support_set.pk)
    support_set.refresh_from_db()
    assert (support_set.status, support_set.error) == (SupportSet.Status.PENDING, "")
    monkeypatch.undo()
    services.support_set_fit(support_set_id=support_set.pk)
    support_set.refresh_from_db()
    assert support_set.status == SupportSet.Status.READY
