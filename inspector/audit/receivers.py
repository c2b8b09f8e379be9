"""Logins, successful and failed, into the audit log (Django's auth signals, whatever backend or view)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from inspector.audit.models import Action
from inspector.audit.services import audit_record

USERNAME_KEYS = ("username", "email")


@receiver(user_logged_in, dispatch_uid="audit_login")
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action=Action.LOGIN, actor=user, object_type="user", object_id=user.pk)


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Django has already masked the password in `credentials`; only the name tried is kept.
    tried = next((str(credentials[k]) for k in USERNAME_KEYS if credentials.get(k)), "")
    audit_record(action=Action.LOGIN_FAILED, object_type="user", details={"username": tried[:150]})
