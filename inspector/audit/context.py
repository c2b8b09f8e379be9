"""The request an audited action happens in, so services can record who and from where without taking the
request as an argument. Set by AuditContextMiddleware for the duration of each request; empty in Celery
workers and management commands (their events have no IP, and the actor the service passes)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

from inspector.security import client_ip

_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


def current_request() -> HttpRequest | None:
    return _request.get()


def request_ip(request: HttpRequest | None) -> str | None:
    # The same address the log-in lockout uses: REMOTE_ADDR, or X-Forwarded-For behind INSPECTOR_TRUSTED_PROXIES.
    if request is None:
        return None
    return client_ip(request) or None


def current_user():
    """The request's user, read when the event is recorded (DRF authenticates tokens inside the view and then
    sets the user on the underlying request), or None."""
    request = _request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if getattr(user, "is_authenticated", False) else None


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
