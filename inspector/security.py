"""Security plumbing: the Content Security Policy and request-size middleware, the client address for the log-in
lockout, the Pillow decompression-bomb limit, and system checks that refuse unsafe production settings."""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Callable

from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponse, JsonResponse
from PIL import Image

# ------------------------------------------------------------------------------------------ Content Security Policy


def content_security_policy() -> str:
    """default-src 'self' and nothing inline: scripts and styles come from /static/ only (htmx is told by the
    htmx-config meta tag not to inject its indicator style). Images may be data: URLs (canvas previews)."""
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data: blob:",
        "connect-src": "'self'",
        "font-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    if settings.INSPECTOR_CSP_REPORT_URI:
        directives["report-uri"] = settings.INSPECTOR_CSP_REPORT_URI
    return "; ".join(f"{k} {v}" for k, v in directives.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that has none (INSPECTOR_CSP_REPORT_ONLY sends it as report-only)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.header = (
            "Content-Security-Policy-Report-Only" if settings.INSPECTOR_CSP_REPORT_ONLY else "Content-Security-Policy"
        )
        self.policy = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault(self.header, self.policy)
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        return response


# ----------------------------------------------------------------------------------------------- request size


class RequestSizeLimitMiddleware:
    """Refuses a request whose declared body exceeds INSPECTOR_MAX_REQUEST_BYTES with 413 before any of it is read.
    (Django reads no body without Content-Length, so the declared size bounds what is read.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.INSPECTOR_MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _refuse(request, 400, "Content-Length is not a number.")
        if length > limit:
            message = (
                f"The request is {length / 2**20:.1f} MiB, more than the limit of {limit / 2**20:.0f} MiB per request. "
                "Split the upload into several batches or a smaller .zip."
            )
            return _refuse(request, 413, message)
        return self.get_response(request)


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=status)
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    response["Connection"] = "close"  # the unread body must not be taken for the next request
    return response


# ---------------------------------------------------------------------------------------------- client address


def client_ip(request: HttpRequest) -> str:
    """The client's address for the log-in lockout: REMOTE_ADDR, unless that is a proxy listed in
    INSPECTOR_TRUSTED_PROXIES; then the right-most X-Forwarded-For address that is not a trusted proxy (the
    left part of the header is whatever the client sent and cannot be trusted)."""
    remote = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted_proxy(remote):
        return remote
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _is_trusted_proxy(address):
            return address if _is_ip(address) else remote
    return remote


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxy_networks())


def trusted_proxy_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p, strict=False) for p in settings.INSPECTOR_TRUSTED_PROXIES]


# ------------------------------------------------------------------------------------------------ Pillow limits


def apply_image_limits() -> None:
    """Pillow's own decompression-bomb guard, at our pixel limit: any Image.open in this process (the upload check,
    the worker decoding a stored image) raises instead of allocating a bomb. Pillow warns between 1x and 2x the
    limit and raises only past 2x; the warning is made an error so the limit is the limit."""
    Image.MAX_IMAGE_PIXELS = settings.INSPECTOR_MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)


# ------------------------------------------------------------------------------------------------ system checks


@checks.register(checks.Tags.security, deploy=False)
def check_production_security(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """With DEBUG off the app must not run with settings that leak cookies or allow downgrade to HTTP. These are
    errors, not warnings: `manage.py check` and every start (runserver, migrate, gunicorn via check) fail."""
    errors: list[checks.CheckMessage] = []
    try:
        trusted_proxy_networks()
    except ValueError as exc:
        errors.append(checks.Error(f"INSPECTOR_TRUSTED_PROXIES: {exc}", id="inspector.E010"))
    if settings.DEBUG:
        return errors
    hint = "Serve over HTTPS (behind a TLS proxy: set SECURE_PROXY_SSL_HEADER) and keep the secure defaults."
    if not settings.SESSION_COOKIE_SECURE or not settings.CSRF_COOKIE_SECURE:
        errors.append(
            checks.Error(
                "DEBUG is off but SECURE_COOKIES is off: cookies would go over HTTP", hint=hint, id="inspector.E001"
            )
        )
    if settings.SECURE_HSTS_SECONDS < 3600:
        errors.append(
            checks.Error(
                f"DEBUG is off but SECURE_HSTS_SECONDS={settings.SECURE_HSTS_SECONDS} (< 3600)",
                hint=hint,
                id="inspector.E002",
            )
        )
    if not settings.SECURE_SSL_REDIRECT and not settings.INSPECTOR_TLS_TERMINATED_UPSTREAM:
        errors.append(
            checks.Error(
                "DEBUG is off but SECURE_SSL_REDIRECT is off",
                id="inspector.E003",
                hint="Set SECURE_SSL_REDIRECT=1, or INSPECTOR_TLS_TERMINATED_UPSTREAM=1 if the proxy redirects itself.",
            )
        )
    if settings.INSPECTOR_CSP_REPORT_ONLY:
        errors.append(
            checks.Error(
                "DEBUG is off but INSPECTOR_CSP_REPORT_ONLY is on: the policy is not enforced", id="inspector.E004"
            )
        )
    if not settings.AXES_ENABLED:
        errors.append(
            checks.Error("DEBUG is off but AXES_ENABLED is off: no limit on password guessing", id="inspector.E005")
        )
    if not settings.SESSION_COOKIE_HTTPONLY or settings.SESSION_COOKIE_SAMESITE not in ("Lax", "Strict"):
        errors.append(checks.Error("session cookie must be HttpOnly and SameSite Lax or Strict", id="inspector.E006"))
    return errors
