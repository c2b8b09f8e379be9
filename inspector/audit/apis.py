from __future__ import annotations

from django.core.paginator import Paginator
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.audit import selectors
from inspector.audit.models import AuditEvent
from inspector.products.models import Role
from inspector.products.selectors import team_get_for_user

PAGE_SIZE = 100


class AuditEventOut(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    actor = serializers.CharField(help_text="username at the time; empty for the system")
    ip = serializers.CharField(allow_null=True)
    action = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    details = serializers.JSONField()


def event_out(e: AuditEvent) -> dict:
    return {
        "id": e.pk,
        "at": e.created_at,
        "actor": e.actor_name,
        "ip": e.ip,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "details": e.details,
    }


class AuditApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="one action (review.decision) or a family (review)"),
            OpenApiParameter("page", int),
        ],
        responses=inline_serializer(
            "AuditPage",
            {
                "count": serializers.IntegerField(),
                "page": serializers.IntegerField(),
                "pages": serializers.IntegerField(),
                "results": AuditEventOut(many=True),
            },
        ),
    )
    def get(self, request: Request, team_id: int) -> Response:
        """The team's audit events, newest first (leads and admins)."""
        team = team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
        events = selectors.audit_events(team_id=team.pk, action=request.query_params.get("action", ""))
        page = Paginator(events, PAGE_SIZE).get_page(request.query_params.get("page"))
        return Response(
            {
                "count": page.paginator.count,
                "page": page.number,
                "pages": page.paginator.num_pages,
                "results": [event_out(e) for e in page.object_list],
            }
        )
