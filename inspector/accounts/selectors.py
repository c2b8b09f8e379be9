"""Reads for API tokens."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from inspector.accounts.models import ApiToken
from inspector.accounts.services import token_digest


def token_list(*, user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def token_get_for_user(*, user, token_id: int) -> ApiToken:
    """The user's own token; another user's token is as absent as a missing one (404, no hint it exists)."""
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is None:
        raise Http404("no such token")
    return token


def token_find_active(*, key: str) -> ApiToken | None:
    """The active token whose secret is `key`, with its user; None for unknown or revoked keys. The lookup is by
    the key's SHA-256, so no comparison time depends on the secret."""
    return (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
