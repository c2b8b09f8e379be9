"""The audit log: an event for each audited action, append-only in the ORM and (PostgreSQL) in the database,
the lead's page, the API and the CSV export."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from inspector.audit.models import Action, AuditEvent, AuditLogIsAppendOnly
from inspector.audit.services import audit_record
from inspector.classifier import services as classifier_services
from inspector.products import services as product_services
from inspector.products.models import Role
from inspector.review import services as review_services
from inspector.review.models import ClassifierVersion

from .factories import ProductFactory, TeamFactory, UserFactory, png_bytes, upload
from .review_data import flagged


@pytest.fixture
def lead(db):
    return UserFactory(username="lena")


@pytest.fixture
def team_of_lead(lead):
    return TeamFactory(members={lead: Role.LEAD})


def _events(action: str):
    return AuditEvent.objects.filter(action=action)


# ---------------------------------------------------------------------------------------------- the actions


def test_logins_that_succeed_and_fail_are_recorded_with_the_ip(client, lead):
    refused = client.post(reverse("login"), {"username": "lena", "password": "wrong"}, REMOTE_ADDR="203.0.113.8")
    assert refused.status_code == 200  # the form again, with its error
    failed = _events(Action.LOGIN_FAILED).get()
    assert failed.details == {"username": "lena"} and failed.actor is None and "wrong" not in str(failed.details)
    response = client.post(
        reverse("login"), {"username": "lena", "password": "pw-for-tests-123"}, REMOTE_ADDR="203.0.113.7"
    )
    assert response.status_code == 302
    login = _events(Action.LOGIN).get()
    assert (login.actor, login.actor_name, login.ip) == (lead, "lena", "203.0.113.7")


def test_a_review_decision_and_its_undo_are_recorded_with_before_and_after(client, owner, batch, types):
    i = flagged(batch, 0, seed=1, verdict="review")
    client.force_login(owner)
    url = reverse("api-review", args=[i.pk])
    body = {"verdict": "defective", "defect_type": "crack"}
    assert client.post(url, body, content_type="application/json", REMOTE_ADDR="198.51.100.2").status_code == 200
    event = _events(Action.REVIEW_DECISION).get()
    assert (event.team_id, event.actor, event.object_type, event.object_id) == (
        batch.product.team_id,
        owner,
        "inspection",
        str(i.pk),
    )
    assert event.details["old"] == ["", ""] and event.details["new"] == ["defective", "crack"]
    assert event.ip == "198.51.100.2"
    review_services.review_undo(user=owner, product=batch.product)
    assert _events(Action.REVIEW_UNDO).get().details["back_to"] == ["", ""]


def test_support_set_creation_and_the_fitted_thresholds_are_recorded(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        support_set, _ = product_services.support_set_create(
            product=product, user=owner, files=[upload("g.png", png_bytes(1)), upload("h.png", png_bytes(2))]
        )
    created = _events(Action.SUPPORT_SET_CREATE).get()
    assert created.actor == owner and created.details["images"] == 2 and created.details["source"] == "upload"
    fitted = _events(Action.THRESHOLDS_SET).get()
    support_set.refresh_from_db()
    assert fitted.details["thresholds"] == support_set.thresholds and fitted.team_id == team.pk
    with django_capture_on_commit_callbacks(execute=True):
        product_services.product_detector_set(product=product, user=owner, method="patchcore")
    switch = _events(Action.DETECTOR_SWITCH).get()
    assert switch.details == {"from": "fastrecon", "to": "patchcore"}
    assert _events(Action.SUPPORT_SET_CREATE).latest("id").details["source"] == "detector switch"


def test_defect_type_create_update_and_merge_are_recorded_with_the_request_user(client, owner, product):
    client.force_login(owner)
    url = reverse("defect-types", args=[product.pk])
    client.post(url, {"action": "create", "name": "crack"})
    client.post(url, {"action": "create", "name": "scratch"})
    crack, scratch = product.defect_types.order_by("name")
    client.post(url, {"action": "update", "id": crack.pk, "name": "cracks", "colour": crack.colour})
    client.post(url, {"action": "merge", "source": scratch.pk, "target": crack.pk})
    assert [e.actor for e in _events(Action.DEFECT_TYPE_CREATE)] == [owner, owner]
    assert _events(Action.DEFECT_TYPE_UPDATE).get().details["changed"] == {"name": ["crack", "cracks"]}
    merge = _events(Action.DEFECT_TYPE_MERGE).get()
    assert merge.details["source"] == "scratch" and merge.details["target"] == "cracks"


def test_classifier_training_promotion_and_rollback_are_recorded(owner, product, labelled):
    classifier_services.classifier_train_request(product=product, user=owner)
    assert _events(Action.CLASSIFIER_TRAIN).get().details["trigger"] == "manual"
    ClassifierVersion.objects.all().delete()
    v1 = ClassifierVersion.objects.create(product=product, version=1, status="ready", payload="x1")
    v2 = ClassifierVersion.objects.create(product=product, version=2, status="ready", payload="x2")
    classifier_services.classifier_promote(version=v1, user=owner)
    classifier_services.classifier_promote(version=v2, user=owner)
    classifier_services.classifier_rollback(product=product, user=owner)
    promotions = [e.details["version"] for e in _events(Action.CLASSIFIER_PROMOTE).order_by("id")]
    assert promotions == [1, 2]
    rollback = _events(Action.CLASSIFIER_ROLLBACK).get()
    assert rollback.details["version"] == 1 and rollback.details["previous"] == 2 and rollback.actor == owner


def test_exports_are_recorded_with_their_filters(client, owner, batch):
    client.force_login(owner)
    product = batch.product
    assert client.get(reverse("api-product-export", args=[product.pk]), {"from": "2025-01-01"}).status_code == 200
    assert client.get(reverse("api-batch-export", args=[batch.pk])).status_code == 200
    assert client.get(reverse("api-product-stats", args=[product.pk]), {"format": "csv"}).status_code == 200
    assert client.get(reverse("api-product-stats", args=[product.pk])).status_code == 200  # JSON: not an export
    what = [(e.details["what"], e.details["filters"]) for e in _events(Action.EXPORT).order_by("id")]
    assert what == [
        ("product images", {"from": "2025-01-01"}),
        ("batch images", {}),
        ("defect-type summary", {"format": "csv"}),
    ]


def test_an_action_that_rolls_back_leaves_no_event(lead, team_of_lead):
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(action=Action.PRODUCT_CREATE, team=team_of_lead, actor=lead)
        raise RuntimeError("the action failed")
    assert not AuditEvent.objects.exists()


# -------------------------------------------------------------------------------------------- append-only


def test_the_orm_refuses_to_change_or_delete_an_event(lead):
    event = audit_record(action=Action.LOGIN, actor=lead)
    event.action = "something else"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == Action.LOGIN


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the append-only trigger exists on PostgreSQL only")
@pytest.mark.parametrize("sql", ["UPDATE audit_auditevent SET action = 'x'", "DELETE FROM audit_auditevent"])
def test_postgresql_rejects_update_and_delete_from_any_client(lead, sql):
    audit_record(action=Action.LOGIN, actor=lead)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.filter(action=Action.LOGIN).count() == 1


def test_deleting_a_user_keeps_their_events(lead, team_of_lead):
    audit_record(action=Action.LOGIN, actor=lead, team=team_of_lead)
    team_of_lead.memberships.all().delete()
    lead.delete()
    event = AuditEvent.objects.get()
    assert event.actor_name == "lena" and event.actor_id is not None


# ------------------------------------------------------------------------------------ page, API, CSV export


def _fill(team, lead, n: int) -> None:
    for k in range(n):
        audit_record(action=Action.REVIEW_DECISION, team=team, actor=lead, object_type="inspection", object_id=k)
    audit_record(action=Action.DETECTOR_SWITCH, team=team, actor=lead, details={"from": "a", "to": "=cmd()"})
    audit_record(action=Action.DETECTOR_SWITCH, team=TeamFactory(), actor=lead)  # another team's


def test_the_audit_page_filters_by_action_and_pages(client, lead, team_of_lead):
    _fill(team_of_lead, lead, 60)
    client.force_login(lead)
    url = reverse("team-audit", args=[team_of_lead.pk])
    first = client.get(url)
    assert first.status_code == 200 and first.context["page"].paginator.count == 61
    assert len(first.context["page"].object_list) == 50
    only = client.get(url, {"action": "product.detector"}).context["page"]
    assert only.paginator.count == 1 and only.object_list[0].details["to"] == "=cmd()"
    assert client.get(url, {"action": "review"}).context["page"].paginator.count == 60  # a family
    assert list(client.get(url, {"page": 2}).context["page"].object_list)[-1].object_id == "0"  # oldest last


def test_the_audit_api_pages_and_filters(client, lead, team_of_lead):
    _fill(team_of_lead, lead, 3)
    client.force_login(lead)
    body = client.get(reverse("api-team-audit", args=[team_of_lead.pk]), {"action": "review.decision"}).json()
    assert body["count"] == 3 and body["pages"] == 1
    assert [e["object_id"] for e in body["results"]] == ["2", "1", "0"] and body["results"][0]["actor"] == "lena"


def test_the_csv_export_has_the_teams_events_is_formula_safe_and_is_itself_audited(client, lead, team_of_lead):
    _fill(team_of_lead, lead, 2)
    client.force_login(lead)
    response = client.get(reverse("team-audit-csv", args=[team_of_lead.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["id", "created_at", "actor", "ip", "action", "object_type", "object_id", "details"]
    # the export's own event is written first, so the file ends with it at the top
    assert [r[4] for r in rows[1:]] == ["export", "product.detector", "review.decision", "review.decision"]
    assert '"=cmd()"' in rows[2][7]  # inside JSON: the cell starts with {, not =
    exported = _events(Action.EXPORT).get()
    assert exported.details["what"] == "audit log" and exported.team_id == team_of_lead.pk


def test_a_reviewer_cannot_read_the_audit_log(client, team_of_lead):
    reviewer = UserFactory()
    team_of_lead.members.add(reviewer, through_defaults={"role": Role.REVIEWER})
    client.force_login(reviewer)
    for name in ("team-audit", "team-audit-csv", "api-team-audit"):
        assert client.get(reverse(name, args=[team_of_lead.pk])).status_code == 403, name
    assert not _events(Action.EXPORT).exists()


def test_behind_a_trusted_proxy_the_event_has_the_forwarded_client_address(client, lead, settings):
    settings.INSPECTOR_TRUSTED_PROXIES = ["10.0.0.0/8"]
    response = client.post(
        reverse("login"),
        {"username": "lena", "password": "pw-for-tests-123"},
        REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="192.0.2.50, 10.1.2.4",
    )
    assert response.status_code == 302
    assert _events(Action.LOGIN).get().ip == "192.0.2.50"
