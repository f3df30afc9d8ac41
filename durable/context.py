"""The workflow context: every effect of a workflow goes through it and is one journal entry.

Replay: the workflow function runs from the top on every slice. `ctx.step(...)` at position `seq`
returns the journal's recorded result when there is one, and only runs the function when the journal
ends there. A recorded entry with another name or kind than the one asked for is non-determinism.
"""

from __future__ import annotations

import contextvars
import json
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone

from durable import journal
from durable.dispatch import dispatch
from durable.errors import DurableError, FencedOut, NonDeterminism, StepFailed, Suspend
from durable.executor import Lease, conf
from durable.models import Signal, Status, StepStatus
from durable.payloads import describe_args, encode_output, safe_text
from durable.registry import Workflow

T = TypeVar("T")
COMPLETED, FAILED = StepStatus.COMPLETED.value, StepStatus.FAILED.value


@dataclass(frozen=True)
class RetryPolicy:
    """How often a step is tried and how long to wait between tries (exponential backoff)."""

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        base = min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()
# A backoff this short sleeps in the worker (the heartbeat keeps the lease); longer ones park the run.
INLINE_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class StepInfo:
    run_id: int
    seq: int
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and workers: an external service deduplicates on it."""
        return f"{self.run_id}:{self.seq}"


_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar("durable_step", default=None)


def current_step() -> StepInfo | None:
    """The step being executed in this thread, for code called from a step body."""
    return _current_step.get()


class Context:
    def __init__(self, lease: Lease, definition: Workflow, entries: dict[int, dict[str, Any]]):
        self._lease = lease
        self.workflow = definition
        self._journal = entries
        self._seq = 0
        self._deadline = time.monotonic() + conf("SLICE_SECONDS")
        self._progressed = False  # a checkpoint in this slice: a slice never yields before one

    # -- public surface ------------------------------------------------------------------------
    @property
    def run_id(self) -> int:
        return self._lease.run_id

    @property
    def idempotency_key(self) -> str:
        """The current step's key (run id and step number) inside a step, the run's outside."""
        step = _current_step.get()
        return step.idempotency_key if step else f"{self.run_id}"

    @property
    def is_replaying(self) -> bool:
        return self._seq < len(self._journal)

    @property
    def position(self) -> int:
        """The sequence number the next journal entry will get (agents cite earlier steps by it)."""
        return self._seq

    def step(
        self,
        fn: Callable[..., T],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        kind: str = "step",
        transactional: bool = False,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run `fn(*args, **kwargs)` once; its JSON result is checkpointed and replayed afterwards.

        transactional: `fn` only touches this database; it runs inside the checkpoint transaction, so
        its effects and its record commit together: exactly once.
        at_most_once: an intent is recorded before `fn` runs; if the worker dies before the outcome is
        recorded, the run stops as `outcome_unknown` and a person says whether it happened.
        """
        seq, step_name = self._next(name or getattr(fn, "__name__", "step"))
        entry = self._recorded(seq, step_name, kind)
        if entry is not None:
            if entry["status"] == StepStatus.COMPLETED:
                return entry["output"]
            if entry["status"] == StepStatus.FAILED:
                raise StepFailed(step_name, seq, entry["error"])
            if entry["status"] == StepStatus.STARTED:
                self._stop_outcome_unknown(seq, step_name)
        self._boundary()
        policy = retry or (NO_RETRY if at_most_once else DEFAULT_RETRY)
        attempts = entry["attempts"] if entry else 0
        exists = entry is not None
        input_json = describe_args(args, kwargs)
        while True:
            attempts += 1
            started = timezone.now()
            if at_most_once:
                self._checkpoint(seq, step_name, kind, StepStatus.STARTED, input_json, None, "", attempts, started, exists)
                exists = True
            self._lease.step_started = time.monotonic()
            token = _current_step.set(StepInfo(self.run_id, seq, step_name, attempts))
            try:
                if transactional:
                    with transaction.atomic():
                        self._lock()  # fence first: a zombie's effects roll back with its record
                        result = fn(*args, **kwargs)
                        output_json = encode_output(result, f"the result of step {seq} {step_name!r}")
                        self._checkpoint(
                            seq, step_name, kind, StepStatus.COMPLETED, input_json, output_json, "",
                            attempts, started, exists,
                        )
                    # what replay will return (JSON turns tuples into lists, int keys into str):
                    # the first run must see the same value or it may take another path
                    return json.loads(output_json)
                result = fn(*args, **kwargs)
                output_json = encode_output(result, f"the result of step {seq} {step_name!r}")
            except Exception as exc:
                error = safe_text(traceback.format_exc())
                # An exception may say it is not worth retrying (`retryable = False`: a bad request,
                # a missing API key) or when to retry (`retry_after` seconds: a rate limit).
                retryable = getattr(exc, "retryable", not isinstance(exc, DurableError))
                final = attempts >= policy.max_attempts or not retryable
                status = StepStatus.FAILED if final else StepStatus.ERROR
                self._checkpoint(seq, step_name, kind, status, input_json, None, error, attempts, started, exists)
                exists = True
                if final:
                    raise StepFailed(step_name, seq, error) from None
                retry_after = getattr(exc, "retry_after", None)
                self._backoff(float(retry_after) if retry_after is not None else policy.delay(attempts))
                continue
            finally:
                _current_step.reset(token)
                self._lease.step_started = None
            self._checkpoint(
                seq, step_name, kind, StepStatus.COMPLETED, input_json, output_json, "", attempts, started, exists
            )
            return json.loads(output_json)  # as replay returns it (see above)

    def sleep(self, seconds: float | timedelta, *, name: str = "sleep") -> None:
        """A durable timer: the run parks, holds no worker, and wakes after `seconds` even across restarts."""
        secs = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        seq, step_name = self._next(name)
        entry = self._recorded(seq, step_name, "sleep")
        if entry is not None and entry["status"] == StepStatus.COMPLETED:
            return None
        if entry is None:
            self._boundary()
            wake_at = self._lease.db_now() + timedelta(seconds=secs)
        else:
            wake_at = journal.parse_ts(entry["wake_at"])

        def due() -> tuple[bool, Any]:
            return self._lease.db_now() >= wake_at, None

        self._resolve_wait(seq, step_name, "sleep", entry, {"seconds": secs}, wake_at, due)
        return None

    def wait_event(self, name: str, *, timeout: float | timedelta | None = None) -> Any:
        """Wait durably for `send_event(run, name, data)`; returns its data, or None on timeout."""
        secs = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        seq, step_name = self._next(name)
        entry = self._recorded(seq, step_name, "event")
        if entry is not None and entry["status"] == StepStatus.COMPLETED:
            return _event_result(entry["output"])
        if entry is None:
            self._boundary()
            deadline = self._lease.db_now() + timedelta(seconds=secs) if secs is not None else None
        else:
            deadline = journal.parse_ts(entry["wake_at"])

        def arrived() -> tuple[bool, Any]:
            signal = Signal.objects.filter(run_id=self.run_id, name=name, consumed_seq=None).order_by("id").first()
            if signal is not None:
                claimed = Signal.objects.filter(pk=signal.pk, consumed_seq=None).update(consumed_seq=seq)
                if claimed:
                    return True, {"data": signal.data}
            if deadline is not None and self._lease.db_now() >= deadline:
                return True, {"timed_out": True}
            return False, None

        output = self._resolve_wait(seq, step_name, "event", entry, {"timeout": secs}, deadline, arrived)
        return _event_result(output)

    def child(self, workflow: str, input: Any = None, *, name: str | None = None, kind: str = "child") -> Any:
        """Start a child run and wait durably for its result (a handoff). Raises StepFailed if it fails.
        `kind` names the journal entry (agents record their handoffs as "handoff")."""
        from durable.models import Run

        seq, step_name = self._next(name or f"child:{workflow}")
        entry = self._recorded(seq, step_name, kind)
        if entry is not None and entry["status"] == StepStatus.COMPLETED:
            return _child_result(step_name, seq, entry["output"])
        if entry is None:
            self._boundary()
        step_input: dict[str, Any] = dict(entry["input"]) if entry else {"workflow": workflow}

        def finished() -> tuple[bool, Any]:
            if "run_id" not in step_input:
                # created in the transaction that records the wait: a crash leaves both or neither
                from durable import control

                child = control.create_run(workflow, input, parent_id=self.run_id, parent_seq=seq)
                step_input["run_id"] = child.pk
                return False, None
            child_id = step_input["run_id"]
            child_run = Run.objects.only("status", "output", "error").get(pk=child_id)
            if child_run.is_terminal:
                return True, {
                    "run_id": child_id,
                    "status": child_run.status,
                    "output": child_run.output,
                    "error": child_run.error,
                }
            return False, None

        output = self._resolve_wait(seq, step_name, kind, entry, step_input, None, finished)
        return _child_result(step_name, seq, output)

    def approval(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        policy: Any = None,
        schema: dict[str, Any] | None = None,
        summary: str = "",
        name: str | None = None,
    ) -> Any:
        """Ask people to approve `tool(**arguments)`; the run waits (no worker, no lease) until one
        decision is recorded. Returns an `approvals.decisions.Decision`: `.approved`, `.arguments`
        (possibly edited by the reviewer), `.reason`; `.verify(tool, arguments)` refuses any other call."""
        request = {"tool": tool, "arguments": arguments, "policy": policy, "schema": schema, "summary": summary}
        return self.approvals([request], name=name or f"approval:{tool}")[0]

    def approvals(self, requests: list[dict[str, Any]], *, name: str = "approvals") -> list[Any]:
        """Ask for several approvals at once (parallel tool calls): each is pending, and decided, on its
        own; the run continues when all are decided. `requests` hold tool, arguments and optionally
        policy, schema, summary. One journal entry; returns one Decision per request, in order."""
        from approvals import decisions
        from approvals.policies import ApprovalPolicy

        seq, step_name = self._next(name)
        entry = self._recorded(seq, step_name, "approval")
        if entry is not None and entry["status"] == StepStatus.COMPLETED:
            return [decisions.Decision.from_output(o) for o in entry["output"]]
        if entry is None:
            self._boundary()
        step_input: dict[str, Any] = dict(entry["input"]) if entry else {
            "requests": [
                {"tool": r["tool"], "arguments": r["arguments"],
                 "hash": decisions.arguments_hash(self.run_id, seq, r["tool"], r["arguments"])}
                for r in requests
            ],
        }

        def decided() -> tuple[bool, Any]:
            if "approval_ids" not in step_input:
                # requested in the transaction that parks the run: never one without the other (FI-11)
                step_input["approval_ids"] = [
                    decisions.request(
                        run_id=self.run_id, seq=seq, index=index, tool=r["tool"], arguments=r["arguments"],
                        policy=r.get("policy") or ApprovalPolicy(), schema=r.get("schema"),
                        summary=r.get("summary", ""),
                    ).pk
                    for index, r in enumerate(requests)
                ]
                return False, None
            outcomes = [decisions.outcome(approval_id) for approval_id in step_input["approval_ids"]]
            return all(o is not None for o in outcomes), outcomes

        output = self._resolve_wait(
            seq, step_name, "approval", entry, step_input, None, decided, wait_status=Status.WAITING_APPROVAL
        )
        return [decisions.Decision.from_output(o) for o in output]

    # -- replay --------------------------------------------------------------------------------
    def _next(self, name: str) -> tuple[int, str]:
        seq = self._seq
        self._seq += 1
        return seq, name[:200]

    def _recorded(self, seq: int, name: str, kind: str) -> dict[str, Any] | None:
        entry = self._journal.get(seq)
        if entry is not None and (entry["name"] != name or entry["kind"] != kind):
            raise NonDeterminism(
                f"replay asked for {kind} {name!r} at step {seq}, "
                f"but the journal holds {entry['kind']} {entry['name']!r} there"
            )
        return entry

    def check_journal_consumed(self) -> None:
        if self._seq < len(self._journal):
            extra = self._journal[self._seq]
            raise NonDeterminism(
                f"the workflow returned after {self._seq} steps, but the journal holds "
                f"{extra['kind']} {extra['name']!r} at step {self._seq}"
            )

    # -- boundaries and parking -------------------------------------------------------------------
    def _boundary(self) -> None:
        """Before a new step: stop if fenced, park if a pause was asked or the slice is used up."""
        if self._lease.lost:
            raise FencedOut(self.run_id)
        if self._lease.status == Status.PAUSING:
            self._park(Status.PAUSED, "run.paused")
        # Only after progress: a replay longer than the budget would otherwise yield forever.
        if self._progressed and time.monotonic() >= self._deadline:
            self._park(Status.QUEUED, "run.yielded", redispatch=True)

    def _park(self, status: str, event: str, *, redispatch: bool = False, wake_at: datetime | None = None) -> None:
        """Release the run as `status`. `self._lease.status` may be stale: a pause asked since this
        worker last looked still wins over a yield or a backoff, and a pause withdrawn since then
        (resumed) is not applied: the run carries on."""
        now, now_params = journal.now_sql()
        where, where_params = self._lease.fence_sql()
        if status == Status.PAUSED:
            where += " AND status = 'pausing'"
        with transaction.atomic():
            row = journal.update_run(
                self.run_id,
                set_sql=(
                    "status = CASE WHEN status = 'pausing' THEN 'paused' ELSE %s END, lease_owner = '', "
                    f"lease_expires_at = NULL, wake_at = %s, dispatched_at = {now}"
                ),
                set_params=[status, journal.ts_param(wake_at), *now_params],
                where_sql=where,
                where_params=where_params,
                new_events=1,
            )
            if row is None:
                if status != Status.PAUSED:
                    raise FencedOut(self.run_id)
                self._lock()  # FencedOut if the lease is lost; else the pause was withdrawn
                return
            parked = row[1]
            journal.insert_events(
                self.run_id, row[0], [("run.paused" if parked == Status.PAUSED else event, {"at_step": self._seq})]
            )
            if redispatch and parked == Status.QUEUED:
                dispatch(self.run_id)
        raise Suspend()

    def _stop_outcome_unknown(self, seq: int, name: str) -> None:
        from durable.executor import stop_for_person

        stop_for_person(self._lease, Status.OUTCOME_UNKNOWN, "step.outcome_unknown", {"seq": seq, "name": name})
        raise Suspend()

    def _backoff(self, delay: float) -> None:
        if delay <= INLINE_BACKOFF_SECONDS and time.monotonic() + delay < self._deadline:
            time.sleep(delay)
            return
        self._park(Status.WAITING, "run.backoff", wake_at=self._lease.db_now() + timedelta(seconds=delay))

    def _lock(self) -> tuple[Any, ...]:
        """Inside a transaction: take the run's row lock and check the fence, before reading state
        that another transaction may change (a signal, a child's status) so no wake-up is lost."""
        where, where_params = self._lease.fence_sql()
        row = journal.update_run(self.run_id, set_sql="id = id", where_sql=where, where_params=where_params)
        if row is None:
            raise FencedOut(self.run_id)
        self._lease.status = row[1]
        return row

    def _resolve_wait(
        self,
        seq: int,
        name: str,
        kind: str,
        entry: dict[str, Any] | None,
        step_input: Any,
        wake_at: datetime | None,
        check: Callable[[], tuple[bool, Any]],
        wait_status: str = Status.WAITING,
    ) -> Any:
        """Complete a wait whose condition holds, or park the run until a waker queues it again."""
        exists = entry is not None
        started = timezone.now()
        with transaction.atomic():
            self._lock()
            done, output = check()
            if done:
                self._checkpoint(
                    seq, name, kind, StepStatus.COMPLETED, journal.dumps(step_input), journal.dumps(output),
                    "", 1, started, exists,
                )
                return output
            where, where_params = self._lease.fence_sql()
            row = journal.update_run(
                self.run_id,
                set_sql=(
                    "status = CASE WHEN status = 'pausing' THEN 'paused' ELSE %s END, "
                    "lease_owner = '', lease_expires_at = NULL, wake_at = %s, next_seq = %s"
                ),
                set_params=[wait_status, journal.ts_param(wake_at), seq],
                where_sql=where,
                where_params=where_params,
                new_events=1,
            )
            if row is None:
                raise FencedOut(self.run_id)
            journal.write_step(
                exists=exists, run_id=self.run_id, seq=seq, name=name, kind=kind, status=StepStatus.WAITING,
                input_json=journal.dumps(step_input), output_json=None, error="", attempts=1,
                epoch=self._lease.epoch, worker=self._lease.worker, started_at=started, finished_at=None,
                wake_at=wake_at,
            )
            journal.insert_events(
                self.run_id, row[0],
                [("run.waiting", {"seq": seq, "kind": kind, "name": name,
                                  "until": wake_at.isoformat() if wake_at else None})],
            )
        raise Suspend()

    # -- the checkpoint: one short transaction, fenced ------------------------------------------------
    def _checkpoint(
        self,
        seq: int,
        name: str,
        kind: str,
        status: str,
        input_json: str | None,
        output_json: str | None,
        error: str,
        attempts: int,
        started: datetime,
        exists: bool,
    ) -> None:
        finished = timezone.now()
        lease = self._lease
        status = str(status)  # a plain str for the DB-API (StepStatus is a str enum)
        done = status == COMPLETED or status == FAILED
        # The heartbeat renews the lease every HEARTBEAT_SECONDS; a checkpoint renews it only when the
        # heartbeat is late. Leaving lease_expires_at (an indexed column) alone keeps the run UPDATE a
        # HOT update on PostgreSQL: no index entries written per step.
        sent = time.monotonic()
        extend = sent - lease.renewed > conf("HEARTBEAT_SECONDS")
        data = {
            "seq": seq, "name": name, "kind": kind, "status": status, "attempts": attempts,
            "ms": round((finished - started).total_seconds() * 1000, 3),
        }
        if error:
            data["error"] = error.strip().splitlines()[-1][:500]
        row = journal.checkpoint(
            self.run_id, fence=lease.fence_sql(), next_seq=seq + 1 if done else seq,
            lease_seconds=conf("LEASE_SECONDS") if extend else None, exists=exists, seq=seq, name=name,
            kind=kind, status=status, input_json=input_json, output_json=output_json, error=error,
            attempts=attempts, epoch=lease.epoch, worker=lease.worker, started_at=started,
            finished_at=finished, event_type=f"step.{status}", event_json=journal.dumps(data),
        )
        if row is None:
            raise FencedOut(self.run_id)
        if extend:
            lease.renewed = sent
        self._lease.status = row[1]
        self._progressed = True


def _event_result(output: Any) -> Any:
    if isinstance(output, str):
        output = json.loads(output)
    if not output or output.get("timed_out"):
        return None
    return output.get("data")


def _child_result(name: str, seq: int, output: Any) -> Any:
    if isinstance(output, str):
        output = json.loads(output)
    if output["status"] != Status.SUCCEEDED:
        reason = output.get("error") or output["status"]
        raise StepFailed(name, seq, f"child run {output['run_id']} {output['status']}: {reason}")
    return output["output"]
