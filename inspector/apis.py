"""REST API (DRF): thin doors over the same services and selectors as the htmx views."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.inspections import selectors as inspection_selectors
from inspector.inspections import services as inspection_services
from inspector.inspections.models import Batch
from inspector.products import selectors as product_selectors
from inspector.products import services as product_services
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


class InspectionOut(serializers.Serializer):
    id = serializers.IntegerField()
    filename = serializers.CharField()
    status = serializers.CharField()
    score = serializers.FloatField(allow_null=True)
    verdict = serializers.CharField()
    heatmap_url = serializers.CharField(allow_null=True)
    error = serializers.CharField()
    duplicate_of = serializers.IntegerField(allow_null=True, help_text="the earliest inspection of the same file")


class RejectedOut(serializers.Serializer):
    filename = serializers.CharField()
    reason = serializers.CharField()


class BatchOut(serializers.Serializer):
    id = serializers.IntegerField()
    product = serializers.IntegerField()
    support_set_version = serializers.IntegerField()
    status = serializers.CharField()
    total = serializers.IntegerField()
    processed = serializers.IntegerField()
    failed = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="images this product had seen before (same SHA-256)")
    lot = serializers.CharField()
    line = serializers.CharField()
    inspections = InspectionOut(many=True)
    rejected = RejectedOut(many=True)


UploadIn = inline_serializer(
    "ImagesUpload",
    {
        "images": serializers.ListField(child=serializers.FileField(), help_text="repeat the field; or one .zip"),
        "lot": serializers.CharField(required=False),
        "line": serializers.CharField(required=False),
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
    latest = product_selectors.support_sets_latest(products=products)  # one query for all products
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


def _batch_out(request: Request, batch: Batch) -> dict:
    progress = inspection_selectors.batch_progress(batch=batch)
    return {
        "id": batch.pk,
        "product": batch.product_id,
        "support_set_version": batch.support_set.version,
        "status": "done" if progress.finished else "running",
        "total": progress.total,
        "processed": progress.processed,
        "failed": progress.failed,
        "duplicates": progress.duplicates,
        "lot": batch.lot,
        "line": batch.line,
        "inspections": [
            {
                "id": i.pk,
                "filename": i.original_name,
                "status": i.status,
                "score": i.score,
                "verdict": i.verdict,
                "heatmap_url": request.build_absolute_uri(reverse("media", args=[i.heatmap.name]))
                if i.heatmap
                else None,
                "error": i.error,
                "duplicate_of": i.duplicate_of_id,
            }
            for i in batch.inspections.order_by("id")
        ],
        "rejected": [{"filename": r.original_name, "reason": r.reason} for r in batch.rejected_files.all()],
    }


def _files(request: Request) -> list:
    return [(f.name, f) for f in request.FILES.getlist("images")]


class ProductListApi(APIView):
    @extend_schema(responses=ProductOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(_products_out(list(product_selectors.product_list_for_user(user=request.user))))

    @extend_schema(request=ProductIn, responses={201: ProductOut})
    def post(self, request: Request) -> Response:
        data = ProductIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            product = product_services.product_create(
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
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id)
        return Response(_products_out([product])[0])


class SupportImagesApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={201: SupportSetOut})
    def post(self, request: Request, product_id: int) -> Response:
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
        try:
            support_set, rejected = product_services.support_set_create(
                product=product, user=request.user, files=_files(request)
            )
        except ValidationError as exc:
            raise ApiValidationError({"images": exc.messages}) from None
        support_set.n_images = support_set.images.count()
        rejected_out = [{"filename": r.name, "reason": r.reason} for r in rejected]
        out = _support_set_out(support_set) | {"rejected": rejected_out}
        return Response(out, status=status.HTTP_201_CREATED)


class BatchListApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={201: BatchOut})
    def post(self, request: Request, product_id: int) -> Response:
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id)
        try:
            batch = inspection_services.batch_create(
                product=product,
                user=request.user,
                files=_files(request),
                lot=request.data.get("lot", ""),
                line=request.data.get("line", ""),
            )
        except ValidationError as exc:
            raise ApiValidationError({"images": exc.messages}) from None
        return Response(_batch_out(request, batch), status=status.HTTP_201_CREATED)


class BatchDetailApi(APIView):
    @extend_schema(responses=BatchOut)
    def get(self, request: Request, batch_id: int) -> Response:
        batch = inspection_selectors.batch_get_for_user(user=request.user, batch_id=batch_id)
        return Response(_batch_out(request, batch))


class DetectorIn(serializers.Serializer):
    method = serializers.CharField(help_text="fastrecon | patchcore | patchcore_plus | dfd")


class ProductDetectorApi(APIView):
    @extend_schema(request=DetectorIn, responses=ProductOut)
    def post(self, request: Request, product_id: int) -> Response:
        """Switch the product's detector: its newest good images are fitted again with it as a new version."""
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id, role=Role.LEAD)
        data = DetectorIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            product_services.product_detector_set(
                product=product, user=request.user, method=data.validated_data["method"]
            )
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict) from None
        return Response(_products_out([product])[0])
