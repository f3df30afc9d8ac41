"""Claim -> replay -> checkpoint -> release, with a heartbeat and fencing.

`drive(run_id)` is what a django-q2 task runs. It claims the run with a compare-and-set that
increments the fencing epoch, replays the workflow function over the journal, runs the next steps,
and stops at the first of: the run finishing, a wait, a pause, the slice budget (then it releases the
lease and dispatches itself again), or losing its lease. Every write it makes after the claim checks
the epoch in the same statement, so a worker that lost its lease can never write again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from durable import journal, registry
from durable.dispatch import dispatch
from durable.errors import FencedOut, NonDeterminism, Suspend, UnknownWorkflow
from durable.payloads import safe_text
from durable.models import Status

log = logging.getLogger("durable.executor")

ACTIVE_SQL = "status IN ('running', 'pausing')"


def worker_id() -> str:
    """host:pid of this process, computed per call because django-q2 forks its workers."""
    return f"{socket.gethostname()}:{os.getpid()}"


def conf(name: str) -> float:
    return float(settings.DURABLE[name])


@dataclass
class Lease:
    """What a worker holds while it drives a run."""

    run_id: int
    epoch: int
    worker: str
    workflow: str
    version: str
    input: Any
    clock_offset: timedelta  # database clock minus this machine's clock
    status: str = Status.RUNNING
    lost: bool = False
    step_started: float | None = None  # monotonic start of the step in progress, for the heartbeat
    held_since: float = field(default_factory=time.monotonic)
    # monotonic time of the last write that extended the lease (claim, heartbeat, checkpoint)
    renewed: float = field(default_factory=time.monotonic)
    # what the claim learnt: the parent run (finish wakes it), and whether any journal exists
    parent_known: bool = False
    parent_id: int | None = None
    has_journal: bool = True

    def db_now(self) -> datetime:
        return timezone.now() + self.clock_offset

    def fence_sql(self) -> tuple[str, list[Any]]:
        return f"lease_epoch = %s AND {ACTIVE_SQL}", [self.epoch]


def claim(run_id: int) -> Lease | None:
    """Take a queued run: one conditional UPDATE that also raises the fence. None if not queued."""
    worker = worker_id()
    row = journal.claim_run(run_id, worker, conf("LEASE_SECONDS"))
    if row is None:
        return None
    event_seq, epoch, workflow, version, raw_input, db_now, parent_id, has_steps = row
    offset = (journal.parse_ts(db_now) - timezone.now()) if db_now is not None else timedelta(0)
    raw = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
    return Lease(run_id, int(epoch), worker, workflow, version, raw, offset,
                 parent_known=True, parent_id=parent_id, has_journal=bool(has_steps))


def drive(run_id: int) -> str:
    """Run one slice of a run. Safe under duplicate delivery: a second claim finds nothing to do."""
    close_old_connections()
    lease = claim(run_id)
    if lease is None:
        return "not claimed"
    heartbeat.hold(lease)
    try:
        return execute(lease)
    except FencedOut:
        log.warning("run %s: lease lost (epoch %s); stopped without writing", run_id, lease.epoch)
        return "fenced out"
    finally:
        heartbeat.release(lease)


def execute(lease: Lease) -> str:
    from durable.context import Context

    try:
        definition = registry.get(lease.workflow)
    except UnknownWorkflow as exc:
        finish(lease, Status.FAILED, error=str(exc))
        return "failed"
    entries = journal.load_journal(lease.run_id) if lease.has_journal else {}
    if definition.version != lease.version:
        if entries:
            # Never mix two definitions in one run: a person continues on the new one or cancels.
            stop_for_person(lease, Status.DEFINITION_CHANGED, "run.definition_changed",
                            {"recorded": lease.version, "current": definition.version})
            return "definition changed"
        adopt_version(lease, definition.version)
    ctx = Context(lease, definition, entries)
    try:
        output = definition(ctx, lease.input)
        ctx.check_journal_consumed()
    except Suspend:
        return "parked"
    except NonDeterminism as exc:
        finish(lease, Status.FAILED, error=f"NonDeterminism: {exc}")
        return "failed"
    except Exception:
        finish(lease, Status.FAILED, error=traceback.format_exc())
        return "failed"
    from durable.payloads import encode_output

    try:
        output_json = encode_output(output, "the workflow's return value")
    except Exception as exc:
        finish(lease, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    finish(lease, Status.SUCCEEDED, output_json=output_json)
    return "succeeded"


def finish(lease: Lease, status: str, *, output_json: str | None = None, error: str = "") -> None:
    error = safe_text(error)
    """Record the run's outcome, fenced; wake the parent run waiting on it."""
    now, now_params = journal.now_sql()
    where, where_params = lease.fence_sql()
    summary = error.strip().splitlines()[-1] if error.strip() else ""
    if lease.parent_known and lease.parent_id is None:  # no parent to wake: one statement
        row = journal.change_run(
            lease.run_id,
            set_sql=(
                f"status = %s, output = {journal.json_param()}, error = %s, finished_at = {now}, "
                "lease_owner = '', lease_expires_at = NULL, wake_at = NULL"
            ),
            set_params=[status, output_json, error, *now_params],
            where_sql=where,
            where_params=where_params,
            event=(f"run.{status}", {"error": summary} if error else {}),
        )
        if row is None:
            raise FencedOut(lease.run_id)
        return
    with transaction.atomic():
        row = journal.update_run(
            lease.run_id,
            set_sql=(
                f"status = %s, output = {journal.json_param()}, error = %s, finished_at = {now}, "
                "lease_owner = '', lease_expires_at = NULL, wake_at = NULL"
            ),
            set_params=[status, output_json, error, *now_params],
            where_sql=where,
            where_params=where_params,
            new_events=1,
            returning="parent_id",
        )
        if row is None:
            raise FencedOut(lease.run_id)
        event_seq, parent_id = row
        journal.insert_events(lease.run_id, event_seq, [(f"run.{status}", {"error": summary} if error else {})])
        if parent_id is not None:
            wake(parent_id, reason="child", child=lease.run_id)


def stop_for_person(lease: Lease, status: str, event: str, data: dict[str, Any]) -> None:
    """Park the run in a status only a person can resolve (fenced; releases the lease)."""
    where, where_params = lease.fence_sql()
    with transaction.atomic():
        row = journal.update_run(
            lease.run_id,
            set_sql="status = %s, lease_owner = '', lease_expires_at = NULL",
            set_params=[status],
            where_sql=where,
            where_params=where_params,
            new_events=1,
        )
        if row is None:
            raise FencedOut(lease.run_id)
        journal.insert_events(lease.run_id, row[0], [(event, data)])


def adopt_version(lease: Lease, version: str) -> None:
    """A run with no journal yet simply runs on the current definition."""
    where, where_params = lease.fence_sql()
    with transaction.atomic():
        row = journal.update_run(
            lease.run_id, set_sql="workflow_version = %s", set_params=[version],
            where_sql=where, where_params=where_params,
        )
    if row is None:
        raise FencedOut(lease.run_id)


def wake(run_id: int, *, reason: str, **data: Any) -> bool:
    """Queue a waiting run again (timer due, event arrived, child finished). Inside a transaction."""
    now, now_params = journal.now_sql()
    row = journal.update_run(
        run_id,
        set_sql=f"status = 'queued', wake_at = NULL, dispatched_at = {now}",
        set_params=now_params,
        where_sql="status IN ('waiting', 'waiting_approval')",
        new_events=1,
    )
    if row is None:
        return False
    journal.insert_events(run_id, row[0], [("run.woken", {"reason": reason, **data})])
    dispatch(run_id)
    return True


class Heartbeat:
    """One thread per process that extends the leases this process holds.

    Renewal is tied to progress (trap 4): a step running longer than STEP_TIMEOUT_SECONDS is not
    renewed, so a hung worker loses its run to a healthy one instead of holding it forever.
    """

    def __init__(self) -> None:
        self._held: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._wake = threading.Event()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.run_id] = lease
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="durable-heartbeat", daemon=True)
                self._thread.start()

    def release(self, lease: Lease) -> None:
        with self._lock:
            if self._held.get(lease.run_id) is lease:
                del self._held[lease.run_id]

    def _loop(self) -> None:
        while True:
            self._wake.wait(conf("HEARTBEAT_SECONDS"))
            with self._lock:
                leases = list(self._held.values())
            for lease in leases:
                try:
                    self.beat(lease)
                except Exception:  # a failed beat must not kill the thread; the lease may lapse
                    log.exception("heartbeat for run %s failed", lease.run_id)
                    close_old_connections()

    def beat(self, lease: Lease) -> None:
        started = lease.step_started
        if started is not None and time.monotonic() - started > conf("STEP_TIMEOUT_SECONDS"):
            return
        expires, exp_params = journal.now_sql(conf("LEASE_SECONDS"))
        where, where_params = lease.fence_sql()
        sent = time.monotonic()
        with transaction.atomic():
            row = journal.update_run(
                lease.run_id,
                set_sql=f"lease_expires_at = {expires}",
                set_params=exp_params,
                where_sql=where,
                where_params=where_params,
            )
        if row is None:
            lease.lost = True
        else:
            lease.status = row[1]
            lease.renewed = sent


heartbeat = Heartbeat()
