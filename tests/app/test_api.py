from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from .factories import UserFactory, png_bytes


def _png(name: str, seed: int) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, png_bytes(seed), content_type="image/png")


def test_full_api_flow_product_support_batch(api, owner, team, django_capture_on_commit_callbacks):
    r = api.post("/api/products/", {"name": "Bottle"}, format="json")
    assert r.status_code == 201, r.content
    pid = r.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post(f"/api/products/{pid}/support-images/", {"images": [_png("a.png", 1), _png("b.png", 2)]})
    assert r.status_code == 201, r.content
    assert r.json()["version"] == 1
    support = api.get(f"/api/products/{pid}/").json()["support_set"]
    assert support["status"] == "ready" and support["n_images"] == 2 and support["thresholds"]["good_max"] > 0
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post(f"/api/products/{pid}/batches/", {"images": [_png("q.png", 3), SimpleUploadedFile("x.png", b"x")]})
    assert r.status_code == 201, r.content
    stranger = APIClient()
    stranger.force_authenticate(UserFactory())
    assert stranger.get(f"/api/batches/{r.json()['id']}/").status_code == 404  # another team's: as if absent
    batch = api.get(f"/api/batches/{r.json()['id']}/").json()
    assert (batch["status"], batch["total"], batch["processed"], batch["failed"]) == ("done", 1, 1, 0)
    item = batch["inspections"][0]
    assert set(item) >= {"id", "filename", "status", "score", "verdict", "heatmap_url", "error"}
    assert item["filename"] == "q.png" and item["heatmap_url"].startswith("http")
    assert batch["rejected"] == [{"filename": "x.png", "reason": "not an image"}]


def test_batch_before_any_support_set_is_a_400_with_a_message(api, owner, team):
    pid = api.post("/api/products/", {"name": "Cap"}, format="json").json()["id"]
    r = api.post(f"/api/products/{pid}/batches/", {"images": [_png("q.png", 3)]})
    assert r.status_code == 400 and "no ready support set" in r.content.decode()


def test_other_team_anonymous_bad_id_and_wrong_method(api, other):
    pid = api.post("/api/products/", {"name": "Valve"}, format="json").json()["id"]
    stranger = APIClient()
    stranger.force_authenticate(other)
    assert stranger.get(f"/api/products/{pid}/").status_code == 404
    assert stranger.post(f"/api/products/{pid}/batches/", {"images": [_png("q.png", 1)]}).status_code == 404
    assert pid not in [p["id"] for p in stranger.get("/api/products/").json()]
    assert stranger.post(f"/api/products/{pid}/support-images/", {"images": [_png("q.png", 1)]}).status_code == 404
    assert APIClient().get(f"/api/products/{pid}/").status_code in (401, 403)
    assert APIClient().post(f"/api/products/{pid}/batches/", {"images": [_png("q.png", 1)]}).status_code in (401, 403)
    assert api.get("/api/products/999999/").status_code == 404
    assert api.get("/api/batches/999999/").status_code == 404
    assert api.delete(f"/api/products/{pid}/").status_code == 405


def test_token_auth_works(owner, team):
    from inspector.accounts.services import token_create

    _, key = token_create(user=owner, name="camera")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/products/").status_code == 200


def test_openapi_schema_is_served(api):
    r = api.get("/api/schema/")
    assert r.status_code == 200 and b"/api/batches/{batch_id}/" in r.content


def test_the_detector_is_switched_per_product_through_the_api(api, owner, team, other):
    from rest_framework.test import APIClient

    product = api.post("/api/products/", {"name": "Cap"}, format="json").json()
    assert product["detector_method"] == "fastrecon"
    url = f"/api/products/{product['id']}/detector/"
    switched = api.post(url, {"method": "patchcore"}, format="json")
    assert switched.status_code == 200 and switched.json()["detector_method"] == "patchcore"
    assert api.post(url, {"method": "nope"}, format="json").status_code == 400
    stranger = APIClient()
    stranger.force_authenticate(other)
    assert stranger.post(url, {"method": "fastrecon"}, format="json").status_code == 404
