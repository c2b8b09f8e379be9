from __future__ import annotations

import logging
from typing import Any

from django.db import models

from inspector.audit.context import current_request, current_user, request_ip
from inspector.audit.models import Action, AuditEvent

log = logging.getLogger(__name__)


def audit_record(
    *,
    action: str,
    team=None,
    actor=None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: object = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. `actor` defaults to the user of the current request, the IP is the request's;
    `obj` (a model instance) fills object_type/object_id. Written in the caller's transaction: an action that
    rolls back leaves no event claiming it happened."""
    if actor is None:
        actor = current_user()
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = obj.pk
    team_id = getattr(team, "pk", team)
    return AuditEvent.objects.create(
        team_id=team_id,
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        object_type=object_type[:40],
        object_id=str(object_id if object_id is not None else "")[:64],
        details=details or {},
        ip=request_ip(current_request()),
    )


def audit_export(*, team, what: str, obj: models.Model | None = None, query=None) -> AuditEvent:
    """An export of data (CSV downloads): what, of which object, with which filters."""
    params = {k: v for k, v in (query or {}).items() if k != "csrfmiddlewaretoken"}
    return audit_record(action=Action.EXPORT, team=team, obj=obj, details={"what": what, "filters": params})
