"""Revocable API tokens: the secret is shown once and stored only as a hash; revoked tokens stop working at once."""

from __future__ import annotations

import hashlib
import importlib
from io import StringIO
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from inspector.accounts.models import ApiToken
from inspector.accounts.services import token_create, token_revoke


def _client(key: str, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
    return client


def test_a_new_token_authenticates_and_only_its_hash_is_stored(owner, team):
    token, key = token_create(user=owner, name="line 3 camera")
    assert key.startswith("insp_") and len(key) > 40
    row = ApiToken.objects.values().get(pk=token.pk)
    assert key not in {str(v) for v in row.values()}
    assert row["digest"] == hashlib.sha256(key.encode()).hexdigest()
    assert _client(key).get("/api/products/").status_code == 200
    assert _client(key, "Bearer").get("/api/products/").status_code == 200


def test_a_revoked_token_is_refused_with_401(owner, team):
    token, key = token_create(user=owner, name="ci")
    token_revoke(token=token)
    response = _client(key).get("/api/products/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_unknown_and_malformed_tokens_are_401_not_500(db):
    assert _client("insp_nope").get("/api/products/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token a b")
    assert client.get("/api/products/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token \u00e9t\u00e9")
    assert client.get("/api/products/").status_code == 401


def test_a_token_of_a_deactivated_user_is_refused(owner, team):
    _, key = token_create(user=owner, name="ci")
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    assert _client(key).get("/api/products/").status_code == 401


def test_use_records_the_last_used_time(owner, team):
    token, key = token_create(user=owner, name="ci")
    assert token.last_used_at is None
    _client(key).get("/api/products/")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_token_needs_a_name(owner):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        token_create(user=owner, name="  ")


# ------------------------------------------------------------------------------------------------- the API


def test_the_api_creates_lists_and_revokes_own_tokens(api, owner, team):
    created = api.post("/api/tokens/", {"name": "exporter"}, format="json")
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    key, token_id = created.json()["key"], created.json()["id"]
    listed = api.get("/api/tokens/").json()
    assert [t["name"] for t in listed] == ["exporter"] and "key" not in listed[0]
    assert _client(key).get("/api/products/").status_code == 200
    assert api.delete(f"/api/tokens/{token_id}/").status_code == 204
    assert api.get(f"/api/tokens/{token_id}/").json()["revoked_at"] is not None
    assert _client(key).get("/api/products/").status_code == 401


def test_another_users_token_is_invisible_and_cannot_be_revoked(api, other):
    theirs, key = token_create(user=other, name="theirs")
    assert api.get(f"/api/tokens/{theirs.pk}/").status_code == 404
    assert api.delete(f"/api/tokens/{theirs.pk}/").status_code == 404
    assert api.get("/api/tokens/").json() == []
    assert _client(key).get("/api/tokens/").json()[0]["name"] == "theirs"


def test_the_token_api_refuses_anonymous_bad_ids_and_wrong_methods(api):
    assert APIClient().get("/api/tokens/").status_code == 401
    assert APIClient().post("/api/tokens/", {"name": "x"}, format="json").status_code == 401
    assert api.get("/api/tokens/999999/").status_code == 404
    assert api.put("/api/tokens/", {}, format="json").status_code == 405
    assert api.post("/api/tokens/", {}, format="json").status_code == 400


# ------------------------------------------------------------------------------------------------ the page


def test_the_page_shows_the_secret_once_and_revokes(client, owner, team):
    client.force_login(owner)
    page = client.post("/account/tokens/", {"name": "camera"})
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    key = page.context["new_key"]
    assert key.encode() in page.content
    again = client.get("/account/tokens/")
    assert key.encode() not in again.content and b"camera" in again.content
    token = ApiToken.objects.get(user=owner)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert _client(key).get("/api/products/").status_code == 401


def test_the_page_refuses_others_anonymous_and_wrong_methods(client, owner, other):
    theirs, _ = token_create(user=other, name="theirs")
    assert client.get("/account/tokens/").status_code == 302  # to the log-in
    client.force_login(owner)
    assert client.post(f"/account/tokens/{theirs.pk}/revoke/").status_code == 404
    assert client.get(f"/account/tokens/{theirs.pk}/revoke/").status_code == 405
    assert client.post("/account/tokens/", {"name": ""}).status_code == 400
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# ------------------------------------------------------------------------------------- command and migration


def test_the_command_prints_a_working_token(owner, team):
    out = StringIO()
    call_command("token_create", owner.username, "--name", "ci", stdout=out)
    assert _client(out.getvalue().strip()).get("/api/products/").status_code == 200
    with pytest.raises(CommandError):
        call_command("token_create", "nobody", stdout=StringIO())


def test_old_drf_tokens_are_imported_hashed_and_keep_working(owner, team):
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created timestamptz)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, owner.pk, "2026-01-02 03:04:05+00"])
    migration = importlib.import_module("inspector.accounts.migrations.0002_import_drf_tokens")
    # The migration only reads the editor's connection; SQLite refuses a real schema editor inside the test's
    # transaction (it cannot switch foreign-key checks off there).
    migration.import_drf_tokens(apps, SimpleNamespace(connection=connection))
    token = ApiToken.objects.get(user=owner)
    assert token.name == "imported DRF token" and token.created_at.year == 2026
    assert _client(old_key).get("/api/products/").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0  # the plain keys are gone
