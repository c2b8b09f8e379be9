"""REST API for the caller's own API tokens."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.accounts import selectors, services
from inspector.accounts.models import ApiToken


class TokenOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="the first characters of the secret")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class TokenCreatedOut(TokenOut):
    key = serializers.CharField(help_text="the secret: shown this once, never again")


class TokenIn(serializers.Serializer):
    name = serializers.CharField(max_length=100)


def _token_out(token: ApiToken) -> dict:
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


class TokenListApi(APIView):
    @extend_schema(responses=TokenOut(many=True))
    def get(self, request: Request) -> Response:
        return Response([_token_out(t) for t in selectors.token_list(user=request.user)])

    @extend_schema(request=TokenIn, responses={201: TokenCreatedOut})
    def post(self, request: Request) -> Response:
        data = TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token, key = services.token_create(user=request.user, name=data.validated_data["name"])
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict) from None
        response = Response(_token_out(token) | {"key": key}, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class TokenDetailApi(APIView):
    @extend_schema(responses=TokenOut)
    def get(self, request: Request, token_id: int) -> Response:
        return Response(_token_out(selectors.token_get_for_user(user=request.user, token_id=token_id)))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        """Revoke the token: requests with it are refused from now on (it stays listed, with the time)."""
        services.token_revoke(token=selectors.token_get_for_user(user=request.user, token_id=token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
