"""REST API of the review loop: defect types, inspection detail with history, review decisions."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.inspections.models import Inspection
from inspector.inspections.selectors import inspection_get_for_user
from inspector.products.models import DefectType, Role
from inspector.products.selectors import product_get_for_user
from inspector.review import selectors, services
from inspector.review.defect_types import defect_type_create, defect_types_live


def api_error(exc: ValidationError) -> ApiValidationError:
    """A service's ValidationError as the API's 400: per field when it names fields, else under "detail"."""
    return ApiValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})


class DefectTypeSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    colour = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", required=False, allow_blank=True, default="")
    shortcut = serializers.CharField(max_length=1, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")


def _type_out(t: DefectType) -> dict:
    return {"id": t.pk, "name": t.name, "colour": t.colour, "shortcut": t.shortcut, "description": t.description}


class DefectTypesApi(APIView):
    @extend_schema(responses=DefectTypeSerializer(many=True))
    def get(self, request: Request, product_id: int) -> Response:
        product = product_get_for_user(user=request.user, product_id=product_id)
        return Response([_type_out(t) for t in defect_types_live(product=product)])

    @extend_schema(request=DefectTypeSerializer, responses={201: DefectTypeSerializer})
    def post(self, request: Request, product_id: int) -> Response:
        product = product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
        data = DefectTypeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            created = defect_type_create(product=product, **data.validated_data)
        except ValidationError as exc:
            raise api_error(exc) from None
        return Response(_type_out(created), status=status.HTTP_201_CREATED)


class HistoryOut(serializers.Serializer):
    kind = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()
    old_verdict = serializers.CharField()
    new_verdict = serializers.CharField()
    old_type = serializers.CharField()
    new_type = serializers.CharField()
    confidence = serializers.FloatField(allow_null=True)
    classifier_version = serializers.IntegerField(allow_null=True)


InspectionDetailOut = inline_serializer(
    "InspectionDetailOut",
    {
        "id": serializers.IntegerField(),
        "batch": serializers.IntegerField(),
        "filename": serializers.CharField(),
        "status": serializers.CharField(),
        "score": serializers.FloatField(allow_null=True),
        "verdict": serializers.CharField(),
        "image_url": serializers.CharField(),
        "heatmap_url": serializers.CharField(allow_null=True),
        "defect_type": inline_serializer(
            "DefectTypeRef",
            {
                "name": serializers.CharField(),
                "confidence": serializers.FloatField(allow_null=True),
                "source": serializers.ChoiceField(["review", "classifier"]),
            },
            allow_null=True,
        ),
        "predicted_unknown": serializers.BooleanField(),
        "ranking": serializers.ListField(child=serializers.ListField(), allow_null=True),
        "classifier_version": serializers.IntegerField(allow_null=True),
        "review": inline_serializer(
            "ReviewState",
            {
                "verdict": serializers.CharField(),
                "by": serializers.CharField(allow_null=True),
                "at": serializers.DateTimeField(allow_null=True),
                "version": serializers.IntegerField(),
            },
        ),
        "history": HistoryOut(many=True),
        "error": serializers.CharField(),
    },
)


def _defect_type_ref(i: Inspection) -> dict | None:
    if i.reviewed_verdict == Inspection.Verdict.DEFECTIVE and i.confirmed_type:
        return {"name": i.confirmed_type.name, "confidence": None, "source": "review"}
    if i.reviewed_verdict == Inspection.Verdict.GOOD:
        return None
    if i.predicted_type and not i.predicted_unknown:
        return {"name": i.predicted_type.name, "confidence": i.predicted_confidence, "source": "classifier"}
    return None


def inspection_out(request: Request, i: Inspection) -> dict:
    media = lambda name: request.build_absolute_uri(reverse("media", args=[name]))  # noqa: E731
    return {
        "id": i.pk,
        "batch": i.batch_id,
        "filename": i.original_name,
        "status": i.status,
        "score": i.score,
        "verdict": i.verdict,
        "image_url": media(i.image.name),
        "heatmap_url": media(i.heatmap.name) if i.heatmap else None,
        "defect_type": _defect_type_ref(i),
        "predicted_unknown": i.predicted_unknown,
        "ranking": i.predicted_ranking,
        "classifier_version": i.classifier_version.version if i.classifier_version else None,
        "review": {
            "verdict": i.reviewed_verdict,
            "by": i.reviewed_by.get_username() if i.reviewed_by else None,
            "at": i.reviewed_at,
            "version": i.review_version,
        },
        "history": [
            {
                "kind": e.kind,
                "user": e.user.get_username() if e.user else None,
                "at": e.created_at,
                "old_verdict": e.old_verdict,
                "new_verdict": e.new_verdict,
                "old_type": e.old_type,
                "new_type": e.new_type,
                "confidence": e.confidence,
                "classifier_version": e.classifier_version,
            }
            for e in selectors.history(inspection=i)
        ],
        "error": i.error,
    }


def _inspection(request: Request, inspection_id: int, role: str = Role.OPERATOR) -> Inspection:
    inspection_get_for_user(user=request.user, inspection_id=inspection_id, role=role)  # 404 / 403
    return Inspection.objects.select_related(
        "batch", "predicted_type", "confirmed_type", "reviewed_by", "classifier_version"
    ).get(pk=inspection_id)


class InspectionDetailApi(APIView):
    @extend_schema(responses=InspectionDetailOut)
    def get(self, request: Request, inspection_id: int) -> Response:
        return Response(inspection_out(request, _inspection(request, inspection_id)))


class ReviewIn(serializers.Serializer):
    verdict = serializers.ChoiceField(["good", "defective"])
    defect_type = serializers.CharField(allow_null=True, required=False, help_text="a type name of the product")
    version = serializers.IntegerField(
        required=False, help_text="the review version you saw; a newer one answers 409 instead of overwriting"
    )


class ReviewApi(APIView):
    @extend_schema(request=ReviewIn, responses={200: InspectionDetailOut, 409: None})
    def post(self, request: Request, inspection_id: int) -> Response:
        inspection = _inspection(request, inspection_id, role=Role.REVIEWER)
        data = ReviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        name = data.validated_data.get("defect_type")
        defect_type = None
        if name:
            defect_type = DefectType.objects.filter(
                product_id=inspection.batch.product_id, name=name, merged_into__isnull=True
            ).first()
            if defect_type is None:
                raise ApiValidationError({"defect_type": f"no defect type named {name!r} in this product"})
        try:
            decided = services.review_decide(
                inspection_id=inspection.pk,
                user=request.user,
                verdict=data.validated_data["verdict"],
                defect_type=defect_type,
                expected_version=data.validated_data.get("version"),
            )
        except services.StaleReview as exc:
            return Response(
                {"detail": str(exc), "version": exc.inspection.review_version}, status=status.HTTP_409_CONFLICT
            )
        except ValidationError as exc:
            raise api_error(exc) from None
        return Response(inspection_out(request, _inspection(request, decided.pk)))
