"""Log-in lockout, security headers and the Content Security Policy, the request-size limit, production checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory, override_settings

from inspector import security

from .factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ lockout


def _log_in(client, username: str, password: str, **extra):
    return client.post("/login/", {"username": username, "password": password}, **extra)


@pytest.fixture
def qa(db):
    return UserFactory(username="qa", password="right-password-123")


def test_after_the_failure_limit_even_the_right_password_is_refused_with_a_clear_page(client, qa, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _log_in(client, "qa", "wrong").status_code == 200  # the form again, with its error
    locked = _log_in(client, "qa", "wrong")
    assert locked.status_code == 429
    assert b"Too many failed log-ins" in locked.content and b"15 minutes" in locked.content
    assert _log_in(client, "qa", "right-password-123").status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_success_before_the_limit_clears_the_failures(client, qa, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _log_in(client, "qa", "wrong")
    assert _log_in(client, "qa", "right-password-123").status_code == 302
    client.logout()
    assert _log_in(client, "qa", "wrong").status_code == 200  # counting starts again


def test_the_lockout_is_per_client_address(client, qa, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _log_in(client, "qa", "wrong", REMOTE_ADDR="10.0.0.1")
    assert _log_in(client, "qa", "right-password-123", REMOTE_ADDR="10.0.0.1").status_code == 429
    assert _log_in(client, "qa", "right-password-123", REMOTE_ADDR="10.0.0.2").status_code == 302


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(client, qa, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        _log_in(client, "qa", "wrong", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    response = _log_in(client, "qa", "right-password-123", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429


def test_the_client_address_comes_from_a_trusted_proxy_only(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    settings.INSPECTOR_TRUSTED_PROXIES = []
    assert security.client_ip(request) == "10.0.0.5"
    settings.INSPECTOR_TRUSTED_PROXIES = ["10.0.0.0/24"]
    assert security.client_ip(request) == "203.0.113.7"  # the right-most address the proxy saw, not the forged one
    request.META["HTTP_X_FORWARDED_FOR"] = "garbage"
    assert security.client_ip(request) == "10.0.0.5"


# ------------------------------------------------------------------------------------------------ headers


def test_pages_carry_a_strict_content_security_policy_and_security_headers(client, owner):
    client.force_login(owner)
    response = client.get("/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_policy_can_be_report_only(client, settings):
    settings.INSPECTOR_CSP_REPORT_ONLY = True
    settings.INSPECTOR_CSP_REPORT_URI = "/csp-report/"
    response = client.get("/login/")
    assert "Content-Security-Policy" not in response
    assert "report-uri /csp-report/" in response["Content-Security-Policy-Report-Only"]


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31_536_000)
def test_https_is_enforced_when_configured(client):
    assert client.get("/login/").status_code == 301
    assert client.get("/login/", secure=True)["Strict-Transport-Security"] == "max-age=31536000"


def test_templates_hold_no_inline_script_style_or_handler():
    """A strict CSP blocks these: the browser test checks the pages, this checks every template."""
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in (ROOT / "templates").rglob("*.html")
        for m in inline.finditer(path.read_text())
    ]
    assert not found


def test_session_and_csrf_cookies_are_http_only_and_same_site(client, qa):
    response = _log_in(client, "qa", "right-password-123")
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


# ------------------------------------------------------------------------------------------------ request size


def test_an_oversized_request_is_refused_with_413_before_it_is_read(client, api, owner, settings):
    settings.INSPECTOR_MAX_REQUEST_BYTES = 1000
    client.force_login(owner)
    page = client.post("/products/1/batches/", {"images": [b"x" * 2000]})
    assert page.status_code == 413 and b"more than the limit" in page.content
    response = api.post("/api/products/", {"description": "x" * 2000}, format="json")
    assert response.status_code == 413 and "more than the limit" in response.json()["detail"]
    assert api.post("/api/products/", {"name": "small"}, format="json").status_code == 201


def test_a_malformed_content_length_is_400(client):
    assert client.generic("POST", "/login/", b"", CONTENT_LENGTH="lots").status_code == 400


# ------------------------------------------------------------------------------------------------ production


def _check(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "AXES_"))}
    production = {"DEBUG": "0", "SECRET_KEY": "k" * 50, "ALLOWED_HOSTS": "inspector.example"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=base | production | env,
        capture_output=True,
        text=True,
    )


def test_production_refuses_to_start_with_unsafe_values_and_starts_with_safe_ones():
    unsafe = _check(SECURE_COOKIES="0", SECURE_HSTS_SECONDS="0")
    assert unsafe.returncode != 0 and "inspector.E001" in unsafe.stderr and "inspector.E002" in unsafe.stderr
    behind_proxy = _check(
        SECURE_SSL_REDIRECT="0",
        INSPECTOR_TLS_TERMINATED_UPSTREAM="1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
    )
    assert behind_proxy.returncode == 0, behind_proxy.stderr


@pytest.fixture
def production(settings):
    """The production defaults of settings.py (DEBUG off), set in this process."""
    settings.DEBUG = False
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_SSL_REDIRECT = True
    return settings


def test_the_production_defaults_pass_the_check(production):
    assert security.check_production_security() == []


@pytest.mark.parametrize(
    ("unsafe", "code"),
    [
        ({"SESSION_COOKIE_SECURE": False}, "inspector.E001"),
        ({"SECURE_HSTS_SECONDS": 0}, "inspector.E002"),
        ({"SECURE_SSL_REDIRECT": False}, "inspector.E003"),
        ({"INSPECTOR_CSP_REPORT_ONLY": True}, "inspector.E004"),
        ({"AXES_ENABLED": False}, "inspector.E005"),
        ({"SESSION_COOKIE_SAMESITE": "None"}, "inspector.E006"),
        ({"INSPECTOR_TRUSTED_PROXIES": ["not-an-address"]}, "inspector.E010"),
    ],
)
def test_each_unsafe_production_value_is_an_error(production, unsafe, code):
    for name, value in unsafe.items():
        setattr(production, name, value)
    assert [e.id for e in security.check_production_security()] == [code]


def test_with_debug_on_the_relaxed_local_defaults_pass(settings):
    settings.DEBUG = True
    settings.SESSION_COOKIE_SECURE = False
    settings.SECURE_HSTS_SECONDS = 0
    assert security.check_production_security() == []
