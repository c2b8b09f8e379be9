"""Account pages: API tokens (create, show the secret once, revoke) and the lockout page of failed log-ins."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from inspector.accounts import selectors, services


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    errors: dict = {}
    new_key = None
    if request.method == "POST":
        try:
            _, new_key = services.token_create(user=request.user, name=request.POST.get("name", ""))
        except ValidationError as exc:
            errors = exc.message_dict
    response = render(
        request,
        "accounts/tokens.html",
        {"tokens": selectors.token_list(user=request.user), "new_key": new_key, "errors": errors},
        status=400 if errors else 200,
    )
    if new_key:
        response["Cache-Control"] = "no-store"  # the secret must not stay in a cache or the back button
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = selectors.token_get_for_user(user=request.user, token_id=token_id)
    services.token_revoke(token=token)
    return redirect("account-tokens")


def locked_out(request: HttpRequest, *args) -> HttpResponse:
    """django-axes calls this (AXES_LOCKOUT_CALLABLE, with the original response and the credentials, unused) when
    an address has too many failed log-ins: 429 and a page that says why and for how long."""
    minutes = settings.AXES_COOLOFF_MINUTES
    return render(request, "registration/locked_out.html", {"cooloff_minutes": minutes}, status=429)
