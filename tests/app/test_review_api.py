"""REST API of the review loop and the product-level pages (defect types, classifier)."""

from __future__ import annotations

from django.urls import reverse
from rest_framework.test import APIClient

from inspector.review.models import ClassifierVersion

from .review_data import flagged, fresh


def test_defect_types_list_and_create_with_validation(api, product, other):
    url = reverse("api-defect-types", args=[product.pk])
    created = api.post(url, {"name": "crack", "colour": "#112233"}, format="json")
    assert created.status_code == 201 and created.json()["shortcut"] == "1"
    assert api.post(url, {"name": "crack"}, format="json").status_code == 400
    assert api.post(url, {"name": "x", "colour": "red"}, format="json").status_code == 400
    assert [t["name"] for t in api.get(url).json()] == ["crack"]
    stranger = APIClient()
    stranger.force_authenticate(other)
    assert stranger.get(url).status_code == 404
    assert APIClient().get(url).status_code in (401, 403)


def test_review_api_records_a_decision_and_answers_409_on_a_stale_version(api, batch, types, owner):
    i = flagged(batch, 0, seed=1, verdict="review")
    url = reverse("api-review", args=[i.pk])
    ok = api.post(url, {"verdict": "defective", "defect_type": "crack", "version": 0}, format="json")
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert body["defect_type"] == {"name": "crack", "confidence": None, "source": "review"}
    assert body["review"]["version"] == 1 and body["review"]["by"] == owner.username
    assert [(h["kind"], h["new_type"]) for h in body["history"]] == [("review", "crack")]
    stale = api.post(url, {"verdict": "good", "version": 0}, format="json")
    assert stale.status_code == 409 and "changed by" in stale.json()["detail"] and stale.json()["version"] == 1
    assert fresh(i).reviewed_verdict == "defective"
    assert api.post(url, {"verdict": "defective", "defect_type": "nope"}, format="json").status_code == 400
    assert api.post(url, {"verdict": "maybe"}, format="json").status_code == 400
    detail = api.get(reverse("api-inspection", args=[i.pk])).json()
    assert detail["review"]["verdict"] == "defective" and detail["verdict"] == "review"


def test_review_api_refuses_another_teams_inspection(batch, types, other):
    i = flagged(batch, 0, seed=1)
    stranger = APIClient()
    stranger.force_authenticate(other)
    assert stranger.post(reverse("api-review", args=[i.pk]), {"verdict": "good"}, format="json").status_code == 404
    assert stranger.get(reverse("api-inspection", args=[i.pk])).status_code == 404
    assert fresh(i).reviewed_verdict == ""


def test_classifier_api_trains_reports_metrics_and_rolls_back(
    api, product, labelled, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(reverse("api-classifier-train", args=[product.pk]))
    assert response.status_code == 202
    state = api.get(reverse("api-classifier", args=[product.pk])).json()
    assert state["active"] == 1
    (v1,) = state["versions"]
    assert v1["status"] == "ready" and v1["metrics"]["loo_accuracy"] == 100.0 and "label_ids" not in v1["metrics"]
    _, queries = labelled
    detail = api.get(reverse("api-inspection", args=[queries[0].pk])).json()
    assert detail["defect_type"]["source"] == "classifier" and detail["classifier_version"] == 1
    assert detail["defect_type"]["confidence"] > 0.3
    with django_capture_on_commit_callbacks(execute=True):
        api.post(reverse("api-classifier-train", args=[product.pk]))
    assert api.get(reverse("api-classifier", args=[product.pk])).json()["active"] == 2
    with django_capture_on_commit_callbacks(execute=True):
        back = api.post(reverse("api-classifier-rollback", args=[product.pk]))
    assert back.status_code == 200 and back.json()["active"] == 1
    assert api.post(reverse("api-classifier-promote", args=[product.pk, 9])).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(reverse("api-classifier-promote", args=[product.pk, 2])).json()["active"] == 2


def test_training_with_no_labels_is_a_400_with_the_reason(api, product):
    response = api.post(reverse("api-classifier-train", args=[product.pk]))
    assert response.status_code == 400 and "no confirmed defect types" in str(response.json())


def test_defect_type_page_creates_renames_and_merges(client, owner, product, types):
    client.force_login(owner)
    url = reverse("defect-types", args=[product.pk])
    page = client.get(url)
    assert page.status_code == 200 and b"crack" in page.content
    client.post(url, {"action": "create", "name": "dent", "shortcut": "", "colour": "#000000"})
    client.post(url, {"action": "update", "id": types["crack"].pk, "name": "fissure", "shortcut": "1"})
    client.post(url, {"action": "merge", "source": types["stain"].pk, "target": types["scratch"].pk})
    names = sorted(product.defect_types.filter(merged_into__isnull=True).values_list("name", flat=True))
    assert names == ["dent", "fissure", "scratch"]
    page = client.get(url)
    assert b"stain" in page.content and b"scratch" in page.content  # merged types listed


def test_classifier_page_trains_and_shows_the_evaluation(
    client, owner, product, labelled, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    url = reverse("classifier", args=[product.pk])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"action": "train"})
    assert ClassifierVersion.objects.get(product=product).is_active
    page = client.get(url).content.decode()
    assert "v1 <b>(in use)</b>" in page and "100.0 %" in page and "Confusion matrix" in page
    live = client.get(url, HTTP_HX_REQUEST="true")
    assert live.status_code == 286  # nothing training: htmx stops polling
