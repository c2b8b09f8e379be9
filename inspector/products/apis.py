"""REST API of products and their support sets: thin doors over the same services and selectors as the pages."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector import ml
from inspector.products import selectors, services
from inspector.products.models import Product, Role, SupportSet


class SupportSetOut(serializers.Serializer):
    version = serializers.IntegerField()
    status = serializers.CharField()
    method = serializers.CharField()
    n_images = serializers.IntegerField()
    thresholds = serializers.JSONField(allow_null=True)
    error = serializers.CharField()


class ProductOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    team = serializers.CharField()
    detector_method = serializers.CharField(help_text="the method new support-set versions are fitted with")
    support_set = SupportSetOut(allow_null=True)


class ProductIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = serializers.IntegerField(
        required=False, help_text="team id (default: your first team where you are lead or admin)"
    )


UploadIn = inline_serializer(
    "ImagesUpload",
    {
        "images": serializers.ListField(child=serializers.FileField(), help_text="repeat the field; or one .zip"),
        "lot": serializers.CharField(required=False, allow_blank=True),
        "line": serializers.CharField(required=False, allow_blank=True),
    },
)


def _support_set_out(support_set: SupportSet | None) -> dict | None:
    if support_set is None:
        return None
    return {
        "version": support_set.version,
        "status": support_set.status,
        "method": support_set.method,
        "progress": support_set.progress,
        "progress_message": support_set.progress_message,
        "n_images": support_set.n_images,
        "thresholds": support_set.thresholds,
        "error": support_set.error,
    }


def _products_out(products: list[Product]) -> list[dict]:
    latest = selectors.support_sets_latest(products=products)  # one query for all products
    return [
        {
            "id": p.pk,
            "name": p.name,
            "description": p.description,
            "team": p.team.name,
            "detector_method": p.method,
            "support_set": _support_set_out(latest.get(p.pk)),
        }
        for p in products
    ]


def request_files(request: Request) -> list:
    """The uploaded files of a multipart request (field "images", repeated), as (name, file) pairs."""
    return [(f.name, f) for f in request.FILES.getlist("images")]


class ProductListApi(APIView):
    @extend_schema(responses=ProductOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(_products_out(list(selectors.product_list_for_user(user=request.user))))

    @extend_schema(request=ProductIn, responses={201: ProductOut})
    def post(self, request: Request) -> Response:
        data = ProductIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            product = services.product_create(
                user=request.user,
                name=data.validated_data["name"],
                description=data.validated_data["description"],
                team_id=data.validated_data.get("team"),
            )
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict) from None
        return Response(_products_out([product])[0], status=status.HTTP_201_CREATED)


class ProductDetailApi(APIView):
    @extend_schema(responses=ProductOut)
    def get(self, request: Request, product_id: int) -> Response:
        product = selectors.product_get_for_user(user=request.user, product_id=product_id)
        return Response(_products_out([product])[0])


class SupportImagesApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={201: SupportSetOut})
    def post(self, request: Request, product_id: int) -> Response:
        product = selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
        try:
            support_set, rejected = services.support_set_create(
                product=product, user=request.user, files=request_files(request)
            )
        except ValidationError as exc:
            raise ApiValidationError({"images": exc.messages}) from None
        support_set.n_images = support_set.images.count()
        rejected_out = [{"filename": r.name, "reason": r.reason} for r in rejected]
        out = _support_set_out(support_set) | {"rejected": rejected_out}
        return Response(out, status=status.HTTP_201_CREATED)


class DetectorIn(serializers.Serializer):
    method = serializers.ChoiceField(choices=ml.detector_methods(), help_text="a method of the detector registry")


class ProductDetectorApi(APIView):
    @extend_schema(request=DetectorIn, responses=ProductOut)
    def post(self, request: Request, product_id: int) -> Response:
        """Switch the product's detector: its newest good images are fitted again with it as a new version."""
        product = selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
        data = DetectorIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.product_detector_set(product=product, user=request.user, method=data.validated_data["method"])
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict) from None
        return Response(_products_out([product])[0])
