from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


def _support_path(instance: SupportImage, filename: str) -> str:
    # Never the uploaded name: a fresh uuid, with the extension of the verified format.
    return f"support/{uuid.uuid4().hex}{_ext(filename)}"


def _state_path(instance: SupportSet, filename: str) -> str:
    return f"support-state/{instance.product_id}/v{instance.version}-{uuid.uuid4().hex}.pt"


def _ext(filename: str) -> str:
    return "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


class Role(models.TextChoices):
    """A member's role in a team; each role can do everything the ones before it can."""

    OPERATOR = "operator"  # upload batches, view the team's products, batches, images
    REVIEWER = "reviewer"  # + review decisions, statistics and exports
    LEAD = "lead"  # + support sets, detector, defect types, classifier training/promotion/rollback, audit log
    ADMIN = "admin"  # + team membership and roles

    @classmethod
    def rank(cls, role: str) -> int:
        return list(cls.values).index(role)

    @classmethod
    def at_least(cls, role: str | None, minimum: str) -> bool:
        return role is not None and cls.rank(role) >= cls.rank(minimum)


class Team(models.Model):
    name = models.CharField(max_length=200, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams", blank=True
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.OPERATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique")]
        ordering = ["team", "user"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Product(models.Model):
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # The detection method new support-set versions are fitted with; blank = INSPECTOR_DETECTOR_METHOD.
    detector_method = models.CharField(max_length=20, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="product_name_unique_in_team")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def method(self) -> str:
        return self.detector_method or settings.INSPECTOR_DETECTOR_METHOD


class SupportSet(models.Model):
    """One version of a product's good reference images and the detector fitted on them."""

    class Status(models.TextChoices):
        PENDING = "pending"
        FITTING = "fitting"
        READY = "ready"
        FAILED = "failed"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="support_sets")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    method = models.CharField(max_length=20)
    state_file = models.FileField(upload_to=_state_path, blank=True)
    thresholds = models.JSONField(null=True, blank=True)  # detection.Thresholds.to_dict()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    fit_started_at = models.DateTimeField(null=True, blank=True)
    fitted_at = models.DateTimeField(null=True, blank=True)
    fit_seconds = models.FloatField(null=True, blank=True)
    # Fit progress for methods that train (DFD): 0..1 and what the worker is doing, polled by the product page.
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "version"], name="support_set_version_unique")]
        ordering = ["product", "-version"]

    def __str__(self) -> str:
        return f"{self.product} v{self.version}"


class SupportImage(models.Model):
    support_set = models.ForeignKey(SupportSet, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveIntegerField()  # index in the fitted support set (nearest_support refers to it)
    image = models.ImageField(upload_to=_support_path, width_field="width", height_field="height", db_index=True)
    original_name = models.CharField(max_length=255)
    checksum = models.CharField(max_length=64)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["support_set", "position"]
        constraints = [models.UniqueConstraint(fields=["support_set", "position"], name="support_image_position")]


class DefectType(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="defect_types")
    name = models.CharField(max_length=100)
    colour = models.CharField(max_length=7, default="#d62728")
    shortcut = models.CharField(max_length=1, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Merged types stay (history refers to them) but are hidden; their images now carry `merged_into`.
    merged_into = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "name"], name="defect_type_name_unique")]
        ordering = ["product", "name"]

    def __str__(self) -> str:
        return self.name
