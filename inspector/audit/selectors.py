from __future__ import annotations

from django.db.models import QuerySet

from inspector.audit.models import Action, AuditEvent


def audit_events(*, team_id: int, action: str = "") -> QuerySet[AuditEvent]:
    """The team's events, newest first; `action` is one action ("review.decision") or a family ("review")."""
    qs = AuditEvent.objects.filter(team_id=team_id)
    if action in Action.values:
        qs = qs.filter(action=action)
    elif action:
        qs = qs.filter(action__startswith=f"{action}.")
    return qs.order_by("-created_at", "-id")


def action_choices() -> list[tuple[str, str]]:
    """Families first (every review action), then each action."""
    families = sorted({a.split(".")[0] for a in Action.values if "." in a})
    return [(f, f"{f}: all") for f in families] + [(a, a) for a in Action.values]
