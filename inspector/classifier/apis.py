"""REST API of the defect-type classifier: its versions, train now, promote (or roll back to) a version."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.classifier import selectors, services
from inspector.products.models import Product, Role
from inspector.products.selectors import product_get_for_user
from inspector.review.apis import api_error
from inspector.review.models import ClassifierVersion


def version_out(v: ClassifierVersion) -> dict:
    metrics = dict(v.metrics or {})
    metrics.pop("label_ids", None)  # internal bookkeeping, can be long
    return {
        "version": v.version,
        "status": v.status,
        "progress": v.progress,
        "active": v.is_active,
        "decision": v.decision,
        "decision_reason": v.decision_reason,
        "method": v.method,
        "method_reason": v.method_reason,
        "trigger": v.trigger,
        "created_at": v.created_at,
        "trained_at": v.trained_at,
        "train_seconds": v.train_seconds,
        "metrics": metrics,
        "error": v.error,
    }


ClassifierOut = inline_serializer(
    "ClassifierOut",
    {
        "active": serializers.IntegerField(allow_null=True),
        "confirmations_since_last_version": serializers.IntegerField(),
        "retrain_every": serializers.IntegerField(),
        "versions": serializers.ListField(child=serializers.DictField()),
    },
)


def classifier_out(product: Product) -> dict:
    versions = list(selectors.classifier_versions(product=product))
    active = next((v.version for v in versions if v.is_active), None)
    return {
        "active": active,
        "confirmations_since_last_version": selectors.confirmations_since_last_version(product_id=product.pk),
        "retrain_every": settings.INSPECTOR_RETRAIN_EVERY,
        "versions": [version_out(v) for v in versions],
    }


class ClassifierApi(APIView):
    @extend_schema(responses=ClassifierOut)
    def get(self, request: Request, product_id: int) -> Response:
        return Response(classifier_out(product_get_for_user(user=request.user, product_id=product_id)))


def _lead_action(
    request: Request, product_id: int, action: Callable[[Product], None], *, status_code: int = 200
) -> Response:
    """Run `action(product)` as a lead of the product's team; the classifier's state afterwards, or a 400."""
    product = product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
    try:
        action(product)
    except ValidationError as exc:
        raise api_error(exc) from None
    return Response(classifier_out(product), status=status_code)


class ClassifierTrainApi(APIView):
    @extend_schema(request=None, responses={202: ClassifierOut})
    def post(self, request: Request, product_id: int) -> Response:
        def train(product: Product) -> None:
            services.classifier_train_request(product=product, user=request.user)

        return _lead_action(request, product_id, train, status_code=status.HTTP_202_ACCEPTED)


def _version(product: Product, version: int) -> ClassifierVersion:
    found = product.classifier_versions.filter(version=version).first()
    if found is None:
        raise NotFound(f"no classifier version {version}")
    return found


class ClassifierPromoteApi(APIView):
    @extend_schema(request=None, responses=ClassifierOut)
    def post(self, request: Request, product_id: int, version: int) -> Response:
        def promote(product: Product) -> None:
            services.classifier_promote(version=_version(product, version), user=request.user)

        return _lead_action(request, product_id, promote)


class ClassifierRollbackApi(APIView):
    @extend_schema(request=None, responses=ClassifierOut)
    def post(self, request: Request, product_id: int) -> Response:
        def rollback(product: Product) -> None:
            services.classifier_rollback(product=product, user=request.user)

        return _lead_action(request, product_id, rollback)
