"""DRF authentication by revocable API tokens: `Authorization: Token <secret>` (or `Bearer <secret>`)."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from inspector.accounts import selectors, services

KEYWORDS = {b"token", b"bearer"}


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None  # not ours: another class (the session) may authenticate
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: use 'Authorization: Token <secret>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = selectors.token_find_active(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        services.token_touch(token=token)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Token"  # makes unauthenticated API requests 401 with WWW-Authenticate, not 403
