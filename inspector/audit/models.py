"""The audit log: an append-only record of security- and quality-relevant actions.

Append-only twice over: the ORM refuses to update or delete a row (model and queryset), and on PostgreSQL a
trigger rejects UPDATE and DELETE on the table whatever the client (migration 0002). The references to the
team and the actor are kept without a database constraint and without cascades: deleting a user or a team
never touches (or is blocked by) its audit rows, and the actor's username is stored as written at the time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditLogIsAppendOnly(Exception):
    pass


class Action(models.TextChoices):
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    REVIEW_DECISION = "review.decision"
    REVIEW_UNDO = "review.undo"
    SUPPORT_SET_CREATE = "support_set.create"
    THRESHOLDS_SET = "support_set.thresholds"
    DETECTOR_SWITCH = "product.detector"
    PRODUCT_CREATE = "product.create"
    DEFECT_TYPE_CREATE = "defect_type.create"
    DEFECT_TYPE_UPDATE = "defect_type.update"
    DEFECT_TYPE_MERGE = "defect_type.merge"
    CLASSIFIER_TRAIN = "classifier.train"
    CLASSIFIER_PROMOTE = "classifier.promote"
    CLASSIFIER_REJECT = "classifier.reject"
    CLASSIFIER_ROLLBACK = "classifier.rollback"
    EXPORT = "export"
    MEMBER_ADD = "team.member_add"
    ROLE_CHANGE = "team.role_change"
    MEMBER_REMOVE = "team.member_remove"


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogIsAppendOnly("audit events cannot be changed")

    def delete(self):
        raise AuditLogIsAppendOnly("audit events cannot be deleted")


class AuditEvent(models.Model):
    team = models.ForeignKey(
        "products.Team", on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)  # the username then; "" for the system
    action = models.CharField(max_length=40, db_index=True)  # an Action value (no choices: no migration per new action)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at"], name="audit_team_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AuditLogIsAppendOnly("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("audit events cannot be deleted")
