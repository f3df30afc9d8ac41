"""The journal: runs, their steps, their events.

A run's state changes only through the compare-and-set functions in executor.py, control.py and
recovery.py; nothing edits status, lease or sequence fields directly (admin shows them read-only).
"""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"  # pause requested while a step runs; takes effect at the next boundary
    PAUSED = "paused"
    WAITING = "waiting"  # durable timer, external event, child run: holds no worker, no lease
    WAITING_APPROVAL = "waiting_approval"  # a person decides; holds no worker, no lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # dead-lettered: crashed its worker MAX_RECOVERIES times without progress
    # Stopped for a person:
    DEFINITION_CHANGED = "definition_changed"  # the workflow's version differs from the run's
    OUTCOME_UNKNOWN = "outcome_unknown"  # an at-most-once step was cut off: did it happen?


TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
ACTIVE = (Status.RUNNING, Status.PAUSING)
NEEDS_PERSON = (Status.DEFINITION_CHANGED, Status.OUTCOME_UNKNOWN, Status.DEAD)


class RunQuerySet(models.QuerySet["Run"]):
    def expired(self) -> "RunQuerySet":
        return self.filter(status__in=ACTIVE, lease_expires_at__lt=Now())

    def due(self) -> "RunQuerySet":
        return self.filter(status=Status.WAITING, wake_at__lte=Now())


class Run(models.Model):
    workflow = models.CharField(max_length=200, db_index=True)
    workflow_version = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    parent_seq = models.IntegerField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    # journal position: number of checkpointed journal entries
    next_seq = models.IntegerField(default=0)
    # lease and fencing: every claim increments lease_epoch; every write checks it
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_epoch = models.BigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)
    event_seq = models.IntegerField(default=0)
    claims = models.IntegerField(default=0)
    recoveries = models.IntegerField(default=0)
    stalls = models.IntegerField(default=0)  # recoveries since the last checkpoint

    objects = RunQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="run_status_lease"),
            models.Index(fields=["status", "wake_at"], name="run_status_wake"),
            models.Index(fields=["status", "dispatched_at"], name="run_status_dispatch"),
            models.Index(fields=["-created_at", "-id"], name="run_created_desc"),
        ]
        permissions = [("control_run", "Can start, pause, resume, cancel and retry runs")]

    def __str__(self) -> str:
        return f"run {self.pk} {self.workflow} [{self.status}]"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class StepStatus(models.TextChoices):
    COMPLETED = "completed"
    FAILED = "failed"  # last attempt failed; the run fails unless the workflow catches it
    ERROR = "error"  # an attempt failed and another will follow
    WAITING = "waiting"  # a sleep, event wait, child run or approval not yet finished
    STARTED = "started"  # at-most-once intent recorded; the body may or may not have run


class Step(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.IntegerField()
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, default="step")
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.IntegerField(default=1)
    epoch = models.BigIntegerField()
    worker = models.CharField(max_length=120, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq")]
        ordering = ["run", "seq"]

    def __str__(self) -> str:
        return f"step {self.seq} {self.name} [{self.status}]"

    @property
    def duration_ms(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds() * 1000
        return None


class Event(models.Model):
    """Append-only timeline of a run; `seq` is per run and allocated under the run's row lock (T14)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.IntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="event_run_seq")]
        ordering = ["run", "seq"]

    def __str__(self) -> str:
        return f"event {self.run_id}:{self.seq} {self.type}"


class Signal(models.Model):
    """An external event sent to a run, kept until a `ctx.wait_event` of that name consumes it."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=200)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    consumed_seq = models.IntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["run", "name", "consumed_seq"], name="signal_pending")]

    def __str__(self) -> str:
        return f"signal {self.name} for run {self.run_id}"
