from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "inspector.audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inspector.audit import receivers  # noqa: F401  (login signals)
