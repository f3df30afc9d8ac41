"""Approvals: a pending action a person must decide, its votes, and the append-only audit trail."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from durable.models import Run


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # its run was cancelled


class Approval(models.Model):
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="approvals")
    seq = models.IntegerField(help_text="the journal position of the approval step")
    index = models.IntegerField(default=0, help_text="position among the approvals asked together")
    tool = models.CharField(max_length=200)
    arguments = models.JSONField()
    arguments_hash = models.CharField(max_length=64)
    schema = models.JSONField(null=True, blank=True, help_text="JSON schema the arguments must satisfy")
    summary = models.TextField(blank=True)
    policy = models.JSONField(default=dict)
    group = models.CharField(max_length=150, help_text="the group that decides now")
    escalated = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_how = models.CharField(max_length=40, blank=True, help_text="reviewer, expiry, cancel")
    reason = models.TextField(blank=True)
    final_arguments = models.JSONField(null=True, blank=True)
    final_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq", "index"], name="approval_run_seq_index")]
        indexes = [
            models.Index(fields=["status", "group", "-created_at"], name="approval_inbox"),
            models.Index(fields=["status", "expires_at"], name="approval_expiry"),
        ]
        permissions = [("decide_approval", "Can decide approvals")]

    def __str__(self) -> str:
        return f"approval {self.pk}: {self.tool} for run {self.run_id} [{self.status}]"

    @property
    def edited(self) -> bool:
        return bool(self.final_hash) and self.final_hash != self.arguments_hash


class Vote(models.Model):
    """One reviewer's approval toward a quorum; a user votes once per approval."""

    approval = models.ForeignKey(Approval, on_delete=models.PROTECT, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    arguments_hash = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["approval", "user"], name="vote_once")]


class AppendOnly(Exception):
    pass


class AuditRecord(models.Model):
    """Append-only: Python refuses updates and deletes, and database triggers refuse them too."""

    approval = models.ForeignKey(Approval, on_delete=models.PROTECT, related_name="audit")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=40)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now(), db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} on approval {self.approval_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnly("audit records cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnly("audit records cannot be deleted")
