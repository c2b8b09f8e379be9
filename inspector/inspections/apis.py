"""REST API of batches: upload one, read its progress and results; thin doors over the inspection services."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inspector.inspections import selectors, services
from inspector.inspections.models import Batch
from inspector.products import selectors as product_selectors
from inspector.products.apis import UploadIn, request_files


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


def _batch_out(request: Request, batch: Batch) -> dict:
    progress = selectors.batch_progress(batch=batch)
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


class BatchListApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={201: BatchOut})
    def post(self, request: Request, product_id: int) -> Response:
        product = product_selectors.product_get_for_user(user=request.user, product_id=product_id)
        try:
            batch = services.batch_create(
                product=product,
                user=request.user,
                files=request_files(request),
                lot=request.data.get("lot", ""),
                line=request.data.get("line", ""),
            )
        except ValidationError as exc:
            raise ApiValidationError({"images": exc.messages}) from None
        return Response(_batch_out(request, batch), status=status.HTTP_201_CREATED)


class BatchDetailApi(APIView):
    @extend_schema(responses=BatchOut)
    def get(self, request: Request, batch_id: int) -> Response:
        batch = selectors.batch_get_for_user(user=request.user, batch_id=batch_id)
        return Response(_batch_out(request, batch))
