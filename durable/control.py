"""Controls on runs, callable from any machine that reaches the database: start, pause, resume,
cancel, retry, send an event. The browser, the JSON API, the command line and admin actions all
call these functions. Each is one transaction of compare-and-set UPDATEs plus its event; a control
that does not apply to the run's status raises InvalidTransition and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from durable import journal, registry
from durable.dispatch import dispatch
from durable.errors import DurableError, IdempotencyConflict, InvalidInput, InvalidTransition, RunNotFound
from durable.executor import wake
from durable.models import TERMINAL, Run, Signal, Status, StepStatus
from durable.payloads import encode_input


# Called inside the cancel transaction with (run_id, user); apps register here (approvals does).
CANCEL_HOOKS: list[Callable[[int, Any], None]] = []


def get_run(run_id: Any) -> Run:
    try:
        pk = int(run_id)
    except (TypeError, ValueError):
        raise RunNotFound(run_id) from None
    try:
        return Run.objects.get(pk=pk)
    except Run.DoesNotExist:
        raise RunNotFound(run_id) from None


def _user_model() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model()


def _actor(user: Any) -> dict[str, Any]:
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return {"by": user.get_username()}


def create_run(
    workflow: str,
    input: Any = None,
    *,
    idempotency_key: str | None = None,
    user: Any = None,
    parent_id: int | None = None,
    parent_seq: int | None = None,
) -> Run:
    """Insert a queued run and dispatch it. Must run inside a transaction."""
    definition = registry.get(workflow)
    value = {} if input is None else input
    encode_input(value, "the run input")
    if parent_id is not None and user is None:
        # a child run acts for whoever started its parent (four-eyes applies to the whole tree)
        user = Run.objects.filter(pk=parent_id).values_list("started_by", flat=True).first()
        user = None if user is None else _user_model().objects.get(pk=user)
    run = Run.objects.create(
        workflow=definition.name,
        workflow_version=definition.version,
        input=value,
        idempotency_key=idempotency_key,
        started_by=user if getattr(user, "is_authenticated", False) else None,
        parent_id=parent_id,
        parent_seq=parent_seq,
        event_seq=1,
        # the database clock; on PostgreSQL in the INSERT itself (Django reads it back by RETURNING)
        dispatched_at=Now() if journal.is_postgres() else journal.now_value(),
    )
    data: dict[str, Any] = {"workflow": definition.name, "version": definition.version, **_actor(user)}
    if parent_id is not None:
        data["parent"] = parent_id
    journal.insert_events(run.pk, 1, [("run.created", data)])
    dispatch(run.pk)
    return run


def start(
    workflow: str, input: Any = None, *, idempotency_key: str | None = None, user: Any = None
) -> Run:
    """Start a run. With an idempotency key, starting twice returns the first run."""
    if idempotency_key is not None:
        if not idempotency_key.strip() or len(idempotency_key) > 255:
            raise InvalidInput("the idempotency key must be 1 to 255 characters")
        existing = _existing(workflow, input, idempotency_key)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            return create_run(workflow, input, idempotency_key=idempotency_key, user=user)
    except IntegrityError:
        existing = _existing(workflow, input, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return existing


def _existing(workflow: str, input: Any, key: str | None) -> Run | None:
    run = Run.objects.filter(idempotency_key=key).first()
    if run is None:
        return None
    if run.workflow != workflow or run.input != ({} if input is None else input):
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used by run {run.pk} with another workflow or input"
        )
    return run


def _refuse(run_id: int, action: str, allowed: str) -> DurableError:
    """Why a compare-and-set changed nothing: the run is gone, or its status does not allow it."""
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if status is None:
        return RunNotFound(run_id)
    return InvalidTransition(f"cannot {action} run {run_id}: it is {status} ({action} applies to {allowed} runs)")


def pause(run_id: Any, *, user: Any = None) -> str:
    """Pause at the next step boundary. A running run goes to `pausing` until its worker parks it."""
    run = get_run(run_id)
    with transaction.atomic():
        row = journal.update_run(
            run.pk,
            set_sql=(
                "status = CASE WHEN status = 'running' THEN 'pausing' ELSE 'paused' END, "
                "lease_owner = CASE WHEN status = 'running' THEN lease_owner ELSE '' END"
            ),
            where_sql="status IN ('queued', 'running', 'waiting', 'waiting_approval')",
            new_events=1,
        )
        if row is None:
            raise _refuse(run.pk, "pause", "queued, running or waiting")
        journal.insert_events(run.pk, row[0], [("run.pause_requested", _actor(user))])
        return str(row[1])


def resume(run_id: Any, *, user: Any = None) -> str:
    """Resume a paused or dead-lettered run; withdraw a pending pause. A run stopped because its
    definition changed continues on the new definition."""
    run = get_run(run_id)
    if run.status == Status.OUTCOME_UNKNOWN:
        raise InvalidTransition(
            f"run {run.pk} is waiting for a person to say whether a step happened: use resolve, not resume"
        )
    version = registry.get(run.workflow).version if run.status == Status.DEFINITION_CHANGED else run.workflow_version
    now, now_params = journal.now_sql()
    with transaction.atomic():
        row = journal.update_run(
            run.pk,
            set_sql=(
                "status = CASE WHEN status = 'pausing' THEN 'running' ELSE 'queued' END, "
                f"stalls = 0, finished_at = NULL, dispatched_at = {now}, workflow_version = %s"
            ),
            set_params=[*now_params, version],
            where_sql="status IN ('paused', 'pausing', 'dead', 'definition_changed')",
            new_events=1,
        )
        if row is None:
            raise _refuse(run.pk, "resume", "paused, pausing, dead or definition_changed")
        data = _actor(user) | ({"version": version} if version != run.workflow_version else {})
        journal.insert_events(run.pk, row[0], [("run.resumed", data)])
        if row[1] == Status.QUEUED:
            dispatch(run.pk)
        return str(row[1])


def cancel(run_id: Any, *, user: Any = None, reason: str = "") -> str:
    """Cancel now: terminal at commit. The epoch is raised, so an in-flight step's checkpoint is
    refused and its worker starts no further step. Child runs are cancelled too."""
    run = get_run(run_id)
    with transaction.atomic():
        if not _cancel(run.pk, user, reason):
            raise _refuse(run.pk, "cancel", "unfinished")
    return Status.CANCELLED


def _cancel(run_id: int, user: Any, reason: str) -> bool:
    now, now_params = journal.now_sql()
    terminal, terminal_params = journal.in_list(TERMINAL)
    row = journal.update_run(
        run_id,
        set_sql=(
            f"status = 'cancelled', finished_at = {now}, lease_owner = '', lease_expires_at = NULL, "
            "lease_epoch = lease_epoch + 1, wake_at = NULL"
        ),
        set_params=now_params,
        where_sql=f"status NOT IN ({terminal})",
        where_params=terminal_params,
        new_events=1,
        returning="parent_id",
    )
    if row is None:
        return False
    data = _actor(user) | ({"reason": reason} if reason else {})
    journal.insert_events(run_id, row[0], [("run.cancelled", data)])
    if row[1] is not None:
        # A parent waiting on this child is woken to see it cancelled, as finish() does for the
        # other outcomes; nothing else would ever wake it. (No-op when the parent is the canceller.)
        wake(row[1], reason="child", child=run_id)
    for hook in CANCEL_HOOKS:  # e.g. close the run's pending approvals in this same transaction
        hook(run_id, user)
    for child_id in Run.objects.filter(parent_id=run_id).exclude(status__in=TERMINAL).values_list("pk", flat=True):
        _cancel(child_id, user, f"parent run {run_id} cancelled")
    return True


def retry(run_id: Any, *, user: Any = None) -> str:
    """Re-queue a failed or dead-lettered run. Its failed step runs again with a fresh retry budget;
    the completed steps before it come back from the journal."""
    run = get_run(run_id)
    with transaction.atomic():
        if not _retry(run, user):
            raise _refuse(run.pk, "retry", "failed or dead")
    return Status.QUEUED


def _retry(run: Run, user: Any) -> bool:
    now, now_params = journal.now_sql()
    row = journal.update_run(
        run.pk,
        set_sql=f"status = 'queued', error = '', output = NULL, finished_at = NULL, stalls = 0, dispatched_at = {now}",
        set_params=now_params,
        where_sql="status IN ('failed', 'dead')",
        new_events=1,
    )
    if row is None:
        return False
    # Only the step that failed the run: the journal's last entry. An earlier failure the
    # workflow caught and handled is history; running it again could change the path the
    # workflow took after it and fail the replay.
    last = run.steps.order_by("-seq").values_list("seq", "status").first()
    failed = [last[0]] if last is not None and last[1] == StepStatus.FAILED else []
    run.steps.filter(seq__in=failed).update(status=StepStatus.ERROR, attempts=0)
    if last is not None and last[1] == StepStatus.COMPLETED:
        # A failed child run (ctx.child) is recorded as the outcome of a completed wait: retry the
        # child (its own journal keeps its completed steps) and wait for it again.
        child = Run.objects.filter(parent_id=run.pk, parent_seq=last[0]).first()
        if child is not None and _retry(child, user):
            failed = [last[0]]
            run.steps.filter(seq=last[0]).update(status=StepStatus.WAITING, output=None, finished_at=None)
    journal.insert_events(run.pk, row[0], [("run.retried", {"steps": failed, **_actor(user)})])
    dispatch(run.pk)
    return True


def resolve(run_id: Any, seq: int, *, happened: bool, output: Any = None, user: Any = None) -> str:
    """Answer an `outcome_unknown` run: did the cut-off at-most-once step happen? If it did, `output`
    is recorded as its result and it never runs again; if not, it runs again."""
    run = get_run(run_id)
    if happened:
        encode_input(output, "the step output")
    now, now_params = journal.now_sql()
    with transaction.atomic():
        row = journal.update_run(
            run.pk,
            set_sql=f"status = 'queued', dispatched_at = {now}" + (", next_seq = %s" if happened else ""),
            set_params=[*now_params, *([int(seq) + 1] if happened else [])],
            where_sql="status = 'outcome_unknown'",
            new_events=1,
        )
        if row is None:
            raise _refuse(run.pk, "resolve", "outcome_unknown")
        steps = run.steps.filter(seq=seq, status=StepStatus.STARTED)
        changed = (
            steps.update(status=StepStatus.COMPLETED, output=output, finished_at=journal.now_value())
            if happened
            else steps.update(status=StepStatus.ERROR, error="cut off before its outcome was recorded; a person said it did not happen")
        )
        if changed != 1:
            raise InvalidTransition(f"run {run.pk} has no step {seq} with an unknown outcome")
        journal.insert_events(
            run.pk, row[0], [("step.outcome_resolved", {"seq": int(seq), "happened": happened, **_actor(user)})]
        )
        dispatch(run.pk)
    return Status.QUEUED


def send_event(run_id: Any, name: str, data: Any = None, *, user: Any = None) -> None:
    """Deliver an external event. It is kept until a `ctx.wait_event(name)` consumes it; a run
    waiting for events is queued again at once."""
    run = get_run(run_id)
    if not name or len(name) > 200:
        raise InvalidInput("the event name must be 1 to 200 characters")
    encode_input(data, "the event data")
    terminal, terminal_params = journal.in_list(TERMINAL)
    with transaction.atomic():
        # The row lock comes first: a worker parking on this event takes the same lock before it
        # looks for signals, so either it sees this signal or this sees it waiting (no lost wake-up).
        row = journal.update_run(
            run.pk, set_sql="id = id", where_sql=f"status NOT IN ({terminal})",
            where_params=terminal_params, new_events=1,
        )
        if row is None:
            raise _refuse(run.pk, "send an event to", "unfinished")
        Signal.objects.create(run_id=run.pk, name=name, data=data)
        journal.insert_events(run.pk, row[0], [("event.received", {"name": name, **_actor(user)})])
        if row[1] == Status.WAITING:
            wake(run.pk, reason="event", name=name)
