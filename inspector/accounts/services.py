"""Writes for API tokens: create (the secret is returned once), revoke, and the touch on use."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from inspector.accounts.models import ApiToken

TOKEN_PREFIX = "insp_"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute per token


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """A new token for the user: the row and the secret. The secret is not stored; show it now or never."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "a token needs a name (what or who uses it)"})
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise ValidationError({"name": "at most 100 characters"})
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:11], digest=token_digest(key))
    return token, key


def token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke now; revoking a revoked token keeps its first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def token_touch(*, token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
