from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "inspector.accounts"
    label = "accounts"

    def ready(self) -> None:
        from inspector import security

        security.apply_image_limits()
        from inspector.accounts import schema  # noqa: F401  (registers the OpenAPI description of token auth)
