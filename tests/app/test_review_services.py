"""The review loop's services: decisions with history and version checks, undo, leases, defect types,
classifier training / evaluation / promotion / rollback, re-classification, false alarms to support images.

Inspections are made with the ORM with synthetic embeddings (a few well separated directions per type), so the
classifier's behaviour is known; the detector is not involved except in the pipeline test.
"""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from inspector import ml
from inspector.classifier import services as classifier_services
from inspector.classifier import tasks as classifier_tasks
from inspector.classifier.training import classifier_train
from inspector.inspections import services as inspection_services
from inspector.inspections.models import Inspection
from inspector.products import services as product_services
from inspector.review import defect_types, selectors, services
from inspector.review.models import ClassifierVersion, ReviewEvent

from .factories import ProductFactory, UserFactory, png_bytes, upload
from .review_data import TYPES, flagged, fresh


def train(product, owner, django_capture_on_commit_callbacks) -> ClassifierVersion:
    with django_capture_on_commit_callbacks(execute=True):
        cv = classifier_services.classifier_train_request(product=product, user=owner)
    cv = fresh(cv)
    return cv


# ----------------------------------------------------------------------------------------------- defect types


def test_defect_types_get_the_next_free_shortcut_and_refuse_duplicates(product):
    a = defect_types.defect_type_create(product=product, name="crack")
    b = defect_types.defect_type_create(product=product, name="scratch", shortcut="5")
    c = defect_types.defect_type_create(product=product, name="stain")
    assert (a.shortcut, b.shortcut, c.shortcut) == ("1", "5", "2")
    with pytest.raises(ValidationError, match="already"):
        defect_types.defect_type_create(product=product, name="crack")
    with pytest.raises(ValidationError, match="already"):
        defect_types.defect_type_create(product=product, name="dent", shortcut="5")
    with pytest.raises(ValidationError, match="one digit"):
        defect_types.defect_type_create(product=product, name="dent", shortcut="g")


def test_rename_keeps_the_old_name_in_history_and_merge_moves_images_with_an_event(batch, types, owner):
    i = flagged(batch, 0, seed=1)
    services.review_decide(
        inspection_id=i.pk, user=owner, verdict="defective", defect_type=types["crack"], expected_version=0
    )
    defect_types.defect_type_update(defect_type=types["crack"], name="hairline crack")
    defect_types.defect_type_merge(source=types["crack"], target=types["scratch"], user=owner)
    i = fresh(i)
    assert i.confirmed_type == types["scratch"] and i.review_version == 2
    events = list(selectors.history(inspection=i).values_list("kind", "old_type", "new_type"))
    assert events == [("review", "", "crack"), ("merge", "hairline crack", "scratch")]
    types["crack"].refresh_from_db()
    assert types["crack"].merged_into == types["scratch"]
    assert [t.name for t in defect_types.defect_types_live(product=batch.product)] == ["scratch", "stain"]
    with pytest.raises(ValidationError, match="merged"):
        services.review_decide(
            inspection_id=i.pk, user=owner, verdict="defective", defect_type=types["crack"], expected_version=2
        )


# -------------------------------------------------------------------------------------------------- decisions


def test_a_decision_is_recorded_with_who_when_previous_and_new_value_and_what_the_machine_said(batch, types, owner):
    i = flagged(batch, 0, seed=1, verdict="review")
    services.review_decide(
        inspection_id=i.pk, user=owner, verdict="defective", defect_type=types["crack"], expected_version=0
    )
    i = services.review_decide(inspection_id=i.pk, user=owner, verdict="good", expected_version=1)
    assert (i.reviewed_verdict, i.confirmed_type, i.reviewed_by, i.review_version) == ("good", None, owner, 2)
    first, second = selectors.history(inspection=i)
    assert (first.user, first.old_verdict, first.new_verdict, first.new_type, first.machine_verdict) == (
        owner,
        "",
        "defective",
        "crack",
        "review",
    )
    assert (second.old_verdict, second.new_verdict, second.old_type, second.new_type) == (
        "defective",
        "good",
        "crack",
        "",
    )
    assert second.created_at >= first.created_at


def test_a_stale_edit_is_refused_with_a_clear_message_and_nothing_is_overwritten(batch, types, owner):
    other = UserFactory()
    batch.product.team.members.add(other, through_defaults={"role": "admin"})
    i = flagged(batch, 0, seed=1)
    services.review_decide(
        inspection_id=i.pk, user=other, verdict="defective", defect_type=types["stain"], expected_version=0
    )
    with pytest.raises(services.StaleReview, match=f"changed by {other.username}"):
        services.review_decide(inspection_id=i.pk, user=owner, verdict="good", expected_version=0)
    i = fresh(i)
    assert (i.reviewed_verdict, i.confirmed_type, i.reviewed_by) == ("defective", types["stain"], other)
    assert ReviewEvent.objects.filter(inspection=i, kind="review").count() == 1


def test_bad_decisions_are_refused(batch, types, owner, team):
    i = flagged(batch, 0, seed=1)
    with pytest.raises(ValidationError, match="verdict"):
        services.review_decide(inspection_id=i.pk, user=owner, verdict="maybe", expected_version=0)
    foreign = defect_types.defect_type_create(product=ProductFactory(team=team), name="elsewhere")
    with pytest.raises(ValidationError, match="another product"):
        services.review_decide(
            inspection_id=i.pk, user=owner, verdict="defective", defect_type=foreign, expected_version=0
        )
    i.status = "failed"
    i.save()
    with pytest.raises(ValidationError, match="processed"):
        services.review_decide(inspection_id=i.pk, user=owner, verdict="good", expected_version=0)


def test_undo_goes_back_one_decision_at_a_time_and_keeps_the_history(batch, types, owner):
    a, b = flagged(batch, 0, seed=1), flagged(batch, 1, seed=2)
    services.review_decide(
        inspection_id=a.pk, user=owner, verdict="defective", defect_type=types["crack"], expected_version=0
    )
    services.review_decide(
        inspection_id=a.pk, user=owner, verdict="defective", defect_type=types["stain"], expected_version=1
    )
    services.review_decide(inspection_id=b.pk, user=owner, verdict="good", expected_version=0)
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == b.pk and undone.reviewed_verdict == "" and undone.lease_by == owner
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == a.pk and (undone.reviewed_verdict, undone.confirmed_type) == ("defective", types["crack"])
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == a.pk and undone.reviewed_verdict == "" and undone.confirmed_type is None
    assert services.review_undo(user=owner, product=batch.product) is None
    assert ReviewEvent.objects.filter(inspection=a).count() == 4  # 2 decisions (now marked undone) + 2 undos


def test_undo_skips_a_decision_someone_else_changed_since_and_never_overwrites_theirs(batch, types, owner):
    other = UserFactory()
    earlier, changed = flagged(batch, 0, seed=1), flagged(batch, 0, seed=2)
    services.review_decide(inspection_id=earlier.pk, user=owner, verdict="good", expected_version=0)
    services.review_decide(inspection_id=changed.pk, user=owner, verdict="good", expected_version=0)
    services.review_decide(
        inspection_id=changed.pk, user=other, verdict="defective", defect_type=types["crack"], expected_version=1
    )
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == earlier.pk and undone.reviewed_verdict == ""
    changed = fresh(changed)
    assert (changed.reviewed_verdict, changed.confirmed_type, changed.reviewed_by) == (
        "defective",
        types["crack"],
        other,
    )
    assert services.review_undo(user=owner, product=batch.product) is None
    kinds = list(selectors.history(inspection=earlier).values_list("kind", "undone"))
    assert kinds == [("review", True), ("undo", False)]  # the decision stays in the history, marked undone


def test_bulk_applies_to_current_versions_and_reports_stale_ones(batch, types, owner):
    a, b, c = (flagged(batch, 0, seed=s) for s in (1, 2, 3))
    services.review_decide(inspection_id=c.pk, user=owner, verdict="good", expected_version=0)
    result = services.review_bulk(
        user=owner,
        product=batch.product,
        items=[(a.pk, 0), (b.pk, 0), (c.pk, 0), (999999, 0)],
        verdict="defective",
        defect_type=types["scratch"],
    )
    assert result.done == [a.pk, b.pk] and len(result.stale) == 2
    assert Inspection.objects.filter(confirmed_type=types["scratch"]).count() == 2


# ----------------------------------------------------------------------------------------------- queue, lease


def test_queue_puts_review_and_unknown_first_then_low_confidence_lowest_first(batch, owner):
    sure = flagged(batch, 0, seed=1)
    doubtful = flagged(batch, 0, seed=2)
    very_doubtful = flagged(batch, 0, seed=3)
    unknown = flagged(batch, 0, seed=4)
    review = flagged(batch, 0, seed=5, verdict="review")
    good = flagged(batch, 0, seed=6, verdict="good")
    Inspection.objects.filter(pk=sure.pk).update(predicted_confidence=0.95)
    Inspection.objects.filter(pk=doubtful.pk).update(predicted_confidence=0.5)
    Inspection.objects.filter(pk=very_doubtful.pk).update(predicted_confidence=0.3)
    Inspection.objects.filter(pk=unknown.pk).update(predicted_unknown=True, predicted_confidence=0.9)
    Inspection.objects.filter(pk=review.pk).update(predicted_confidence=0.99)
    order = [i.pk for i in selectors.queue(product=batch.product, filters=selectors.QueueFilters())]
    assert order == [unknown.pk, review.pk, very_doubtful.pk, doubtful.pk, sure.pk]
    everything = selectors.QueueFilters(verdict="all")
    assert good.pk in [i.pk for i in selectors.queue(product=batch.product, filters=everything)]


def test_two_reviewers_never_hold_the_same_image(batch, owner):
    other = UserFactory()
    a, b = flagged(batch, 0, seed=1), flagged(batch, 0, seed=2)
    assert services.lease_take(inspection=a, user=owner)
    assert not services.lease_take(inspection=a, user=other)
    nxt = selectors.queue_next(product=batch.product, filters=selectors.QueueFilters(), user=other)
    assert [i.pk for i in nxt] == [b.pk]
    services.lease_release(user=owner, inspection_id=a.pk)
    assert services.lease_take(inspection=a, user=other)


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_on_one_image_one_wins_the_other_is_told(batch, types, owner):
    """Two reviewers confirm the same image at the same moment, each from version 0 (threads, real
    transactions): exactly one decision is recorded; the other gets StaleReview. Nothing is lost."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers per connection file; the race needs PostgreSQL row locks")
    other = UserFactory()
    i = flagged(batch, 0, seed=1)
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(user, type_name):
        from django.db import connection as conn

        try:
            barrier.wait()
            services.review_decide(
                inspection_id=i.pk, user=user, verdict="defective", defect_type=types[type_name], expected_version=0
            )
            outcomes.append("ok")
        except services.StaleReview:
            outcomes.append("stale")
        finally:
            conn.close()

    threads = [threading.Thread(target=decide, args=a) for a in ((owner, "crack"), (other, "stain"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok", "stale"]
    i = fresh(i)
    assert i.review_version == 1 and ReviewEvent.objects.filter(inspection=i, kind="review").count() == 1


# ------------------------------------------------------------------------------------------------ classifier


def test_training_judges_by_leave_one_out_promotes_the_first_version_and_reclassifies(
    batch, product, owner, labelled, django_capture_on_commit_callbacks
):
    rows, queries = labelled
    cv = train(product, owner, django_capture_on_commit_callbacks)
    assert (cv.status, cv.decision, cv.is_active, cv.method) == ("ready", "promoted", True, "prototype")
    assert cv.metrics["n_labels"] == 6 and cv.metrics["loo_n"] == 6 and cv.metrics["loo_accuracy"] == 100.0
    assert cv.metrics["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    for q in queries:
        q = fresh(q)
        truth = TYPES[int(q.original_name[3:-4]) // 10 % 100]
        assert q.classifier_version == cv and q.predicted_type.name == truth, q.predicted_ranking
        assert 0 < q.predicted_confidence <= 1
        assert ReviewEvent.objects.filter(inspection=q, kind="prediction", classifier_version=1).count() == 1
    reviewed = rows["crack"][0]
    reviewed = fresh(reviewed)
    assert reviewed.classifier_version is None  # reviewed images are not re-classified


def test_a_worse_version_is_held_for_a_lead_and_one_click_rolls_back(
    batch, product, owner, types, labelled, django_capture_on_commit_callbacks
):
    first = train(product, owner, django_capture_on_commit_callbacks)
    # New labels that contradict the geometry: stain-like images confirmed as crack, and vice versa.
    for j in range(4):
        i = flagged(batch, 2, seed=500 + j)
        services.review_decide(
            inspection_id=i.pk, user=owner, verdict="defective", defect_type=types["crack"], expected_version=0
        )
    second = train(product, owner, django_capture_on_commit_callbacks)
    assert second.status == "ready"
    assert second.metrics["compared"]["n"] == 4 and second.metrics["compared"]["active_version"] == 1
    if second.decision == "held":
        assert not second.is_active and "waits for a lead" in second.decision_reason
        first = fresh(first)
        assert first.is_active
        with django_capture_on_commit_callbacks(execute=True):
            classifier_services.classifier_promote(version=second, user=owner)
        second = fresh(second)
        assert second.is_active
    with django_capture_on_commit_callbacks(execute=True):
        back = classifier_services.classifier_rollback(product=product, user=owner)
    assert back.pk == first.pk
    first = fresh(first)
    second = fresh(second)
    assert first.is_active and not second.is_active and second.decision == "rolled_back"
    assert ClassifierVersion.objects.filter(product=product, is_active=True).count() == 1


def test_training_starts_by_itself_after_n_new_confirmations(
    batch, product, owner, types, settings, django_capture_on_commit_callbacks
):
    settings.INSPECTOR_RETRAIN_EVERY = 3
    images = [flagged(batch, k % 3, seed=k) for k in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        for k, i in enumerate(images[:2]):
            services.review_decide(
                inspection_id=i.pk, user=owner, verdict="defective", defect_type=types[TYPES[k]], expected_version=0
            )
    assert not ClassifierVersion.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        services.review_decide(
            inspection_id=images[2].pk, user=owner, verdict="defective", defect_type=types["stain"], expected_version=0
        )
    cv = ClassifierVersion.objects.get()
    assert (cv.trigger, cv.status, cv.is_active) == ("confirmations", "ready", True)


def test_training_without_any_confirmed_type_is_refused(product, owner):
    with pytest.raises(ValidationError, match="no confirmed defect types"):
        classifier_services.classifier_train_request(product=product, user=owner)


def test_a_failed_training_is_shown_as_failed_with_the_reason(
    product, owner, labelled, monkeypatch, django_capture_on_commit_callbacks
):
    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ml, "train_classifier", boom)
    cv = train(product, owner, django_capture_on_commit_callbacks)
    assert cv.status == "failed" and "out of memory" in cv.error and not cv.is_active


# -------------------------------------------------------------------------------------------------- pipeline


def test_pipeline_stores_an_embedding_for_flagged_images_and_classifies_them(
    owner, team, django_capture_on_commit_callbacks
):
    """Real small detector: every image carries an embedding; with an active classifier flagged ones get a type."""
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(
            product=product, user=owner, files=[upload(f"g{i}.png", png_bytes(i)) for i in range(3)]
        )
    files = [upload(f"d{i}.png", png_bytes(20 + i, defect=True)) for i in range(4)]
    files += [upload(f"g{i}.png", png_bytes(40 + i)) for i in range(2)]
    with django_capture_on_commit_callbacks(execute=True):
        batch = inspection_services.batch_create(product=product, user=owner, files=files)
    done = list(batch.inspections.order_by("id"))
    assert all(i.status == "done" for i in done)
    assert all(i.embedding is not None for i in done)  # also good ones: a reviewer may mark a missed defect
    flagged_rows = [i for i in done if i.verdict in ("review", "defective")]
    assert flagged_rows, [i.verdict for i in done]
    crack = defect_types.defect_type_create(product=product, name="crack")
    services.review_decide(
        inspection_id=flagged_rows[0].pk, user=owner, verdict="defective", defect_type=crack, expected_version=0
    )
    cv = train(product, owner, django_capture_on_commit_callbacks)
    assert cv.is_active
    with django_capture_on_commit_callbacks(execute=True):
        more = inspection_services.batch_create(
            product=product, user=owner, files=[upload("x.png", png_bytes(77, True))]
        )
    new = more.inspections.get()
    if new.verdict != "good":
        assert new.classifier_version == cv and new.predicted_confidence is not None


def test_confirmed_false_alarms_become_good_images_of_a_new_support_set(
    owner, team, django_capture_on_commit_callbacks
):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        first, _ = product_services.support_set_create(
            product=product, user=owner, files=[upload(f"g{i}.png", png_bytes(i)) for i in range(3)]
        )
    with django_capture_on_commit_callbacks(execute=True):
        batch = inspection_services.batch_create(
            product=product, user=owner, files=[upload("a.png", png_bytes(50)), upload("b.png", png_bytes(51))]
        )
    a, b = batch.inspections.order_by("id")
    Inspection.objects.filter(pk__in=[a.pk, b.pk]).update(verdict="review")
    services.review_decide(inspection_id=a.pk, user=owner, verdict="good", expected_version=0)
    with django_capture_on_commit_callbacks(execute=True):
        support_set = services.false_alarms_to_support(product=product, user=owner)
    support_set = fresh(support_set)
    assert support_set.version == 2 and support_set.status == "ready"
    names = list(support_set.images.order_by("position").values_list("original_name", flat=True))
    assert names == ["g0.png", "g1.png", "g2.png", "a.png"]
    with pytest.raises(ValidationError, match="no confirmed false alarm"):
        services.false_alarms_to_support(product=product, user=owner)


def test_undo_after_a_rename_or_a_merge_restores_the_type_itself(batch, types, owner):
    """Undo follows the type, not its old name: renamed, it is the same type; merged, it is the merge target."""
    renamed, merged = flagged(batch, 0, seed=1), flagged(batch, 0, seed=2)
    for i, first, second in ((renamed, "crack", "scratch"), (merged, "stain", "scratch")):
        services.review_decide(
            inspection_id=i.pk, user=owner, verdict="defective", defect_type=types[first], expected_version=0
        )
        services.review_decide(
            inspection_id=i.pk, user=owner, verdict="defective", defect_type=types[second], expected_version=1
        )
    defect_types.defect_type_update(defect_type=types["crack"], name="fissure")
    defect_types.defect_type_merge(source=types["stain"], target=types["crack"], user=owner)  # stain -> fissure
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == merged.pk and undone.confirmed_type == types["crack"]
    undone = services.review_undo(user=owner, product=batch.product)  # merged's first decision: back to nothing
    assert undone.pk == merged.pk and undone.confirmed_type is None and undone.reviewed_verdict == ""
    undone = services.review_undo(user=owner, product=batch.product)
    assert undone.pk == renamed.pk and undone.confirmed_type == types["crack"]
    assert undone.confirmed_type.name == "fissure"


def test_the_reaper_fails_a_version_whose_worker_was_lost_and_resends_a_forgotten_one(
    product, owner, labelled, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from inspector.reaper import work_reap

    lost = ClassifierVersion.objects.create(product=product, version=1, status="training")
    ClassifierVersion.objects.filter(pk=lost.pk).update(started_at=timezone.now() - timedelta(hours=2))
    forgotten = ClassifierVersion.objects.create(product=product, version=2)
    ClassifierVersion.objects.filter(pk=forgotten.pk).update(created_at=timezone.now() - timedelta(hours=2))
    sent = []
    monkeypatch.setattr(classifier_tasks.classifier_train_task, "delay", sent.append)
    counts = work_reap()
    assert (counts["classifiers_failed"], counts["classifiers_resent"]) == (1, 1) and sent == [forgotten.pk]
    lost = fresh(lost)
    assert lost.status == "failed" and "worker was lost" in lost.error
    # The product is not blocked: the forgotten version trains when its message arrives.
    classifier_train(version_id=forgotten.pk)
    assert fresh(forgotten).is_active


def test_a_rename_after_training_keeps_the_predictions_on_the_same_type(
    batch, product, owner, types, labelled, django_capture_on_commit_callbacks
):
    train(product, owner, django_capture_on_commit_callbacks)
    defect_types.defect_type_update(defect_type=types["scratch"], name="scuff")
    defect_types.defect_type_create(product=product, name="scratch")  # a new type reusing the old name
    cv = ClassifierVersion.objects.get(product=product)
    query = flagged(batch, 1, seed=4242)  # near the old scratch direction
    classifier_services.classify_inspections(version=cv, inspections=[query])
    query = fresh(query)
    assert query.predicted_type == types["scratch"] and query.predicted_type.name == "scuff"
    assert query.predicted_ranking[0][0] == "scuff"


def test_a_lead_decision_made_while_a_version_trains_is_not_overridden(
    batch, product, owner, types, labelled, monkeypatch, django_capture_on_commit_callbacks
):
    first = train(product, owner, django_capture_on_commit_callbacks)
    second = train(product, owner, django_capture_on_commit_callbacks)
    assert fresh(second).is_active
    real = ml.train_classifier

    def train_while_a_lead_rolls_back(*args, **kwargs):
        classifier_services.classifier_rollback(product=product, user=owner)  # v2 -> v1 meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(ml, "train_classifier", train_while_a_lead_rolls_back)
    third = train(product, owner, django_capture_on_commit_callbacks)
    assert third.status == "ready" and not third.is_active and third.decision == "held"
    assert "changed while this one trained" in third.decision_reason
    assert fresh(first).is_active


def test_keyset_before_and_after_agree_with_the_queue_order(batch):
    rows = [flagged(batch, 0, seed=s, verdict="review" if s % 4 == 0 else "defective") for s in range(12)]
    confidences = [None, 0.9, 0.3, 0.3, None, 0.5, 0.95, 0.59, 0.61, None, 0.3, 0.8]
    for row, c in zip(rows, confidences, strict=True):
        Inspection.objects.filter(pk=row.pk).update(predicted_confidence=c, predicted_unknown=(c == 0.8))
    qs = selectors.queue(product=batch.product, filters=selectors.QueueFilters())
    order = [i.pk for i in qs]
    for k, row in enumerate(qs):
        assert [i.pk for i in qs.filter(selectors.after_q(row))] == order[k + 1 :]
        assert [i.pk for i in qs.filter(selectors.before_q(row))] == order[:k]
        assert selectors.queue_position(product=batch.product, filters=selectors.QueueFilters(), inspection=row) == (
            k,
            len(order),
        )
