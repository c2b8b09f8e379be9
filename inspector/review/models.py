"""Review decisions, their history, and the defect-type classifier's versions."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product


def _payload_path(instance: ClassifierVersion, filename: str) -> str:
    return f"classifiers/{instance.product_id}/v{instance.version}-{uuid.uuid4().hex}.pt"


class ClassifierVersion(models.Model):
    """One trained defect-type classifier of a product: payload, evaluation, and whether it is the one in use."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        TRAINING = "training"
        READY = "ready"  # trained and evaluated; `decision` says whether it was promoted
        FAILED = "failed"

    class Decision(models.TextChoices):
        PENDING = "pending"  # not evaluated yet
        PROMOTED = "promoted"  # in use now or was (see is_active)
        HELD = "held"  # worse than the active version on the same labels: waits for a lead
        REJECTED = "rejected"  # a lead decided against it
        ROLLED_BACK = "rolled_back"  # was active; a lead went back to an earlier version

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="classifier_versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    decision = models.CharField(max_length=12, choices=Decision.choices, default=Decision.PENDING)
    decision_reason = models.CharField(max_length=500, blank=True)
    is_active = models.BooleanField(default=False)
    method = models.CharField(max_length=20, blank=True)
    method_reason = models.CharField(max_length=300, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)  # percent, shown while training
    payload = models.FileField(upload_to=_payload_path, blank=True)
    metrics = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=20, default="manual")  # manual | confirmations
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    trained_at = models.DateTimeField(null=True, blank=True)
    train_seconds = models.FloatField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["product", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["product", "version"], name="classifier_version_unique"),
            models.UniqueConstraint(
                fields=["product"], condition=models.Q(is_active=True), name="one_active_classifier_per_product"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product} classifier v{self.version}"


class ReviewEvent(models.Model):
    """Append-only history of an inspection's verdict and defect type: machine predictions and human decisions.

    Names are copied as they were at the time, so renaming or merging a type later never rewrites history.
    """

    class Kind(models.TextChoices):
        PREDICTION = "prediction"  # the classifier (re)classified the image
        REVIEW = "review"  # a reviewer decided
        UNDO = "undo"  # a reviewer took a decision back (that decision is kept, marked undone)
        MERGE = "merge"  # the confirmed type was merged into another one

    inspection = models.ForeignKey(Inspection, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    undone = models.BooleanField(default=False)  # a review decision its author took back (an UNDO event follows)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    old_verdict = models.CharField(max_length=10, blank=True)
    new_verdict = models.CharField(max_length=10, blank=True)
    old_type = models.CharField(max_length=100, blank=True)
    new_type = models.CharField(max_length=100, blank=True)
    # The types themselves, so an undo restores the right one after a rename or merge (names are for history).
    old_type_ref = models.ForeignKey(DefectType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    new_type_ref = models.ForeignKey(DefectType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    confidence = models.FloatField(null=True, blank=True)  # predictions
    classifier_version = models.PositiveIntegerField(null=True, blank=True)  # predictions
    # For reviews: what the machine said at the moment of the decision (the override rate is measured on it).
    machine_verdict = models.CharField(max_length=10, blank=True)
    machine_type = models.CharField(max_length=100, blank=True)  # the type it ranked first
    machine_unknown = models.BooleanField(default=False)  # ... but too far from it: sent to a human as unknown
    machine_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["inspection", "id"]
        indexes = [models.Index(fields=["kind", "created_at"])]
