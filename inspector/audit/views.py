"""The audit log of a team, for its leads and admins: a filtered, paginated page and a CSV export (itself an
audited action)."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from inspector.audit import selectors
from inspector.audit.services import audit_export
from inspector.products.models import Role
from inspector.products.selectors import team_get_for_user

PAGE_SIZE = 50
CSV_COLUMNS = ["id", "created_at", "actor", "ip", "action", "object_type", "object_id", "details"]


@login_required
@require_GET
def audit_page(request: HttpRequest, team_id: int) -> HttpResponse:
    team = team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
    action = request.GET.get("action", "")
    page = Paginator(selectors.audit_events(team_id=team.pk, action=action), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {"team": team, "page": page, "action": action, "actions": selectors.action_choices()}
    return render(request, "audit/audit.html", context)


def csv_rows(events):
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
def audit_csv(request: HttpRequest, team_id: int) -> StreamingHttpResponse:
    from inspector.exports import csv_lines  # formula-injection-safe CSV writer

    team = team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
    action = request.GET.get("action", "")
    events = selectors.audit_events(team_id=team.pk, action=action)
    audit_export(team=team.pk, what="audit log", obj=team, query=request.GET)
    response = StreamingHttpResponse(csv_lines(CSV_COLUMNS, csv_rows(events)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slugify(team.name) or team.pk}-audit.csv"'
    return response
