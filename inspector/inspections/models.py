from __future__ import annotations

import enum
import uuid

from django.conf import settings
from django.db import models

from inspector.products.models import DefectType, Product, SupportImage, SupportSet


def _image_path(instance: Inspection, filename: str) -> str:
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return f"inspections/{uuid.uuid4().hex}{ext}"


def _heatmap_path(instance: Inspection, filename: str) -> str:
    return f"heatmaps/{uuid.uuid4().hex}.jpg"


class Batch(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="batches")
    support_set = models.ForeignKey(SupportSet, on_delete=models.PROTECT, related_name="batches")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    lot = models.CharField(max_length=100, blank=True)
    line = models.CharField(max_length=100, blank=True)
    total = models.PositiveIntegerField(default=0)  # accepted images

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"Batch {self.pk} of {self.product}"


class RejectedFile(models.Model):
    """A file of an upload that was refused before queueing, with the reason shown to the user."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="rejected_files")
    original_name = models.CharField(max_length=255)
    reason = models.CharField(max_length=500)


class Inspection(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Verdict(models.TextChoices):
        GOOD = "good"
        REVIEW = "review"
        DEFECTIVE = "defective"
        # The verdicts that put an image before a reviewer (and the classifier): REVIEW and DEFECTIVE. A nonmember,
        # so not a choice of its own; plain strings, because the members do not exist yet inside the class body.
        FLAGGED = enum.nonmember(("review", "defective"))

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="inspections")
    support_set = models.ForeignKey(SupportSet, on_delete=models.PROTECT, related_name="+")  # the judging version
    # Indexed: the access-checked media view finds the owner of a file by its name.
    image = models.ImageField(upload_to=_image_path, width_field="width", height_field="height", db_index=True)
    original_name = models.CharField(max_length=255)
    checksum = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)  # claims by a worker; database/broker trouble not counted
    # The Celery task holding the claim while running: its redelivery (same id, after a killed worker) may take over.
    task_id = models.CharField(max_length=64, blank=True)
    # The earliest inspection of the same file (sha256) in the same product: still inspected, shown as a duplicate.
    duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    score = models.FloatField(null=True, blank=True)
    verdict = models.CharField(max_length=10, choices=Verdict.choices, blank=True, db_index=True)
    heatmap = models.ImageField(upload_to=_heatmap_path, blank=True, db_index=True)
    nearest_support = models.ForeignKey(
        SupportImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    detect_ms = models.FloatField(null=True, blank=True)  # the detector's own time for this image

    # Defect type. embedding: the classifier's input, for every processed image (float16 bytes of the pooled residual
    # embedding, see inspector/ml.py), kept so training and re-classification need no image or backbone.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    predicted_type = models.ForeignKey(DefectType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    predicted_unknown = models.BooleanField(default=False)  # the best type was too far: a new kind of defect?
    predicted_confidence = models.FloatField(null=True, blank=True)
    predicted_ranking = models.JSONField(null=True, blank=True)  # [[type name, cosine similarity], ...]
    classifier_version = models.ForeignKey(
        "review.ClassifierVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    # Review. review_version increments on every decision: an edit based on an older version is refused.
    reviewed_verdict = models.CharField(max_length=10, choices=Verdict.choices, blank=True, db_index=True)
    confirmed_type = models.ForeignKey(DefectType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    review_version = models.PositiveIntegerField(default=0)
    # A short lease while a reviewer has the image open, so two reviewers never get the same one.
    lease_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "id"]
        indexes = [models.Index(fields=["batch", "status"])]

    @property
    def is_reviewed(self) -> bool:
        return bool(self.reviewed_verdict)

    def __str__(self) -> str:
        return f"{self.original_name} ({self.status})"
