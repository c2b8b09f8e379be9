"""Team pages: my teams and my role in each; a team's members, managed by its admins; the team's audit log for
its leads and admins (a filtered, paginated page and a CSV export, itself an audited action)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

from inspector.audit import selectors as audit_selectors
from inspector.audit.models import AuditEvent
from inspector.audit.services import audit_export
from inspector.params import is_db_id
from inspector.products import selectors, services
from inspector.products.models import Role

AUDIT_PAGE_SIZE = 50
AUDIT_CSV_COLUMNS = ["id", "created_at", "actor", "ip", "action", "object_type", "object_id", "details"]


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    return render(request, "products/teams.html", {"teams": selectors.teams_for_user(user=request.user)})


def _user_id(value: str) -> int:
    if not is_db_id(value):
        raise ValidationError({"user": "no such member of this team"})
    return int(value)


@login_required
@require_http_methods(["GET", "POST"])
def team_members(request: HttpRequest, team_id: int) -> HttpResponse:
    """Every member sees who is in the team; adding, changing roles and removing need the admin role."""
    role = Role.ADMIN if request.method == "POST" else Role.OPERATOR
    team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=role)
    if request.method == "POST":
        post = request.POST
        action = post.get("action", "")
        try:
            if action == "add":
                m = services.membership_add(
                    team=team, actor=request.user, username=post.get("username", ""), role=post.get("role", "")
                )
                messages.success(request, f"{m.user.get_username()} added as {m.role}.")
            elif action == "role":
                m = services.membership_role_set(
                    team=team, actor=request.user, user_id=_user_id(post.get("user", "")), role=post.get("role", "")
                )
                messages.success(request, f"{m.user.get_username()} is now {m.role}.")
            elif action == "remove":
                services.membership_remove(team=team, actor=request.user, user_id=_user_id(post.get("user", "")))
                messages.success(request, "Member removed.")
            else:
                raise ValidationError("unknown action")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("team-members", team_id=team.pk)
        if not selectors.role_in_team(user=request.user, team_id=team.pk):
            return redirect("team-list")  # an admin who removed themselves
        return redirect("team-members", team_id=team.pk)
    context = {
        "team": team,
        "members": selectors.team_members(team=team),
        "roles": Role.choices,
        "is_admin": team.user_role == Role.ADMIN,
        "is_lead": Role.at_least(team.user_role, Role.LEAD),
    }
    return render(request, "products/members.html", context)


@login_required
@require_GET
def team_audit(request: HttpRequest, team_id: int) -> HttpResponse:
    team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
    action = request.GET.get("action", "")
    page = Paginator(audit_selectors.audit_events(team_id=team.pk, action=action), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {"team": team, "page": page, "action": action, "actions": audit_selectors.action_choices()}
    return render(request, "products/audit.html", context)


def audit_csv_rows(events: QuerySet[AuditEvent]) -> Iterator[list]:
    for e in events.iterator(chunk_size=2000):
        yield [
            e.pk,
            e.created_at.isoformat(),
            e.actor_name,
            e.ip or "",
            e.action,
            e.object_type,
            e.object_id,
            json.dumps(e.details, sort_keys=True, ensure_ascii=False),
        ]


@login_required
@require_GET
def team_audit_csv(request: HttpRequest, team_id: int) -> StreamingHttpResponse:
    from inspector.exports import csv_lines  # formula-injection-safe CSV writer

    team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
    action = request.GET.get("action", "")
    events = audit_selectors.audit_events(team_id=team.pk, action=action)
    audit_export(team=team.pk, what="audit log", obj=team, query=request.GET)
    lines = csv_lines(AUDIT_CSV_COLUMNS, audit_csv_rows(events))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slugify(team.name) or team.pk}-audit.csv"'
    return response
