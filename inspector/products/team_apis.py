"""REST API of teams, members and the team audit log: the same services as the team pages."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.audit import selectors as audit_selectors
from inspector.audit.models import AuditEvent
from inspector.products import selectors, services
from inspector.products.models import Membership, Role

AUDIT_PAGE_SIZE = 100


class TeamOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    role = serializers.ChoiceField(Role.choices, help_text="your role in the team")
    members = serializers.IntegerField()


class MemberOut(serializers.Serializer):
    user = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.ChoiceField(Role.choices)
    since = serializers.DateTimeField()


class MemberIn(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(Role.choices)


class RoleIn(serializers.Serializer):
    role = serializers.ChoiceField(Role.choices)


def _member_out(m: Membership) -> dict:
    return {"user": m.user_id, "username": m.user.get_username(), "role": m.role, "since": m.created_at}


def _error(exc: ValidationError) -> ApiValidationError:
    return ApiValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})


class TeamListApi(APIView):
    @extend_schema(responses=TeamOut(many=True))
    def get(self, request: Request) -> Response:
        teams = selectors.teams_for_user(user=request.user)
        return Response([{"id": t.pk, "name": t.name, "role": t.user_role, "members": t.n_members} for t in teams])


class TeamMembersApi(APIView):
    @extend_schema(responses=MemberOut(many=True))
    def get(self, request: Request, team_id: int) -> Response:
        team = selectors.team_get_for_user(user=request.user, team_id=team_id)
        return Response([_member_out(m) for m in selectors.team_members(team=team)])

    @extend_schema(request=MemberIn, responses={201: MemberOut})
    def post(self, request: Request, team_id: int) -> Response:
        team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.ADMIN)
        data = MemberIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            m = services.membership_add(team=team, actor=request.user, **data.validated_data)
        except ValidationError as exc:
            raise _error(exc) from None
        return Response(_member_out(m), status=status.HTTP_201_CREATED)


class TeamMemberApi(APIView):
    @extend_schema(request=RoleIn, responses=MemberOut)
    def patch(self, request: Request, team_id: int, user_id: int) -> Response:
        team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.ADMIN)
        data = RoleIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            m = services.membership_role_set(
                team=team, actor=request.user, user_id=user_id, role=data.validated_data["role"]
            )
        except ValidationError as exc:
            raise _error(exc) from None
        return Response(_member_out(m))

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, team_id: int, user_id: int) -> Response:
        team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.ADMIN)
        try:
            services.membership_remove(team=team, actor=request.user, user_id=user_id)
        except ValidationError as exc:
            raise _error(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventOut(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    actor = serializers.CharField(help_text="username at the time; empty for the system")
    ip = serializers.CharField(allow_null=True)
    action = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    details = serializers.JSONField()


def _event_out(e: AuditEvent) -> dict:
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


class TeamAuditApi(APIView):
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
        team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=Role.LEAD)
        events = audit_selectors.audit_events(team_id=team.pk, action=request.query_params.get("action", ""))
        page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.query_params.get("page"))
        return Response(
            {
                "count": page.paginator.count,
                "page": page.number,
                "pages": page.paginator.num_pages,
                "results": [_event_out(e) for e in page.object_list],
            }
        )
