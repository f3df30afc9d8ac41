"""The sweeper: finds runs that need a worker and hands them to one. Safe to run many copies.

Every change is a compare-and-set conditional on what the sweeper saw (the expired owner's epoch, the
waiting status), so a sweep racing a live owner or another sweeper changes nothing (trap 16).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


from django.db import OperationalError, connection, transaction

from durable import journal
from durable.dispatch import dispatch
from durable.executor import conf, wake

log = logging.getLogger("durable.recovery")
BATCH = 100
STRANDED_BATCH = 20  # more than a cluster prefetches (queue_limit = workers)


@dataclass
class SweepResult:
    recovered: int = 0
    dead: int = 0
    woken: int = 0
    redispatched: int = 0

    def __bool__(self) -> bool:
        return bool(self.recovered or self.dead or self.woken or self.redispatched)


# Extra sweeps apps register (approvals: expiry); each is called once per sweep, returns a count.
SWEEP_HOOKS: list[Callable[[], int]] = []


def sweep() -> SweepResult:
    result = SweepResult()
    recover_expired(result)
    if result.recovered or result.dead:
        # A worker died. Tasks it had already taken from the queue for other runs died with it, and
        # django-q2 would only hand them out again after `retry`; re-dispatch the runs queued longer
        # than a lease now. A run merely waiting for a busy worker gets a duplicate task: harmless,
        # its claim makes the second delivery a no-op.
        redispatch_stale(result, after=conf("LEASE_SECONDS"), limit=STRANDED_BATCH)
    wake_due(result)
    redispatch_stale(result)
    for hook in SWEEP_HOOKS:
        result.woken += hook()
    return result


@contextmanager
def _one_run(run_id: int) -> Iterator[None]:
    """One run's change in its own transaction. On PostgreSQL a row that another session holds
    locked (a worker frozen in the middle of a transaction) is skipped after a second, instead of
    stalling the recovery of every other run behind it; PostgreSQL ends the frozen session's
    transaction after DURABLE_IDLE_IN_TRANSACTION_SECONDS, and a later sweep takes the run."""
    try:
        with transaction.atomic():
            if journal.is_postgres():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '1s'")
            yield
    except OperationalError as exc:
        log.warning("run %s skipped by this sweep: %s", run_id, str(exc).strip())


def _select(sql: str, params: list[object]) -> list[tuple[object, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def recover_expired(result: SweepResult) -> None:
    """Runs whose worker stopped renewing its lease: queue them again, or dead-letter a crash loop."""
    now, now_params = journal.now_sql()
    rows = _select(
        f"SELECT id, lease_epoch, lease_owner, next_seq, lease_expires_at FROM {journal.RUN} "
        f"WHERE status IN ('running', 'pausing') AND lease_expires_at < {now} LIMIT {BATCH}",
        now_params,
    )
    max_recoveries = int(conf("MAX_RECOVERIES"))
    for run_id, epoch, owner, next_seq, expired_at in rows:
        with _one_run(int(run_id)):
            row = journal.update_run(
                int(run_id),
                set_sql=(
                    "status = CASE WHEN stalls + 1 >= %s THEN 'dead' "
                    "WHEN status = 'pausing' THEN 'paused' ELSE 'queued' END, "
                    "lease_owner = '', lease_expires_at = NULL, lease_epoch = lease_epoch + 1, "
                    f"recoveries = recoveries + 1, stalls = stalls + 1, dispatched_at = {now}"
                ),
                set_params=[max_recoveries, *now_params],
                where_sql=f"lease_epoch = %s AND status IN ('running', 'pausing') AND lease_expires_at < {now}",
                where_params=[epoch, *now_params],
                new_events=1,
                returning="status, stalls",
            )
            if row is None:
                continue
            event_seq, status, stalls = row
            data = {
                "previous_owner": owner,
                "epoch": int(epoch),
                "at_step": int(next_seq),
                "lease_expired_at": str(journal.parse_ts(expired_at).isoformat()) if expired_at else None,
                "stalls": int(stalls),
            }
            if status == "dead":
                journal.insert_events(int(run_id), event_seq, [("run.dead_lettered", data)])
                result.dead += 1
                log.error("run %s dead-lettered after %s recoveries without progress", run_id, stalls)
                continue
            journal.insert_events(int(run_id), event_seq, [("run.recovered", data)])
            if status == "queued":
                dispatch(int(run_id))
            result.recovered += 1
            log.warning("run %s: worker %s stopped renewing its lease; re-dispatched at step %s", run_id, owner, next_seq)


def wake_due(result: SweepResult) -> None:
    """Waiting runs whose timer (sleep, event timeout, retry backoff) is due."""
    now, now_params = journal.now_sql()
    rows = _select(
        f"SELECT id FROM {journal.RUN} WHERE status = 'waiting' AND wake_at <= {now} LIMIT {BATCH}", now_params
    )
    for (run_id,) in rows:
        with _one_run(int(run_id)):
            if wake(int(run_id), reason="timer"):
                result.woken += 1


def redispatch_stale(result: SweepResult, *, after: float | None = None, limit: int = BATCH) -> None:
    """Queued runs that no worker claimed in time (a task lost in a stuck or dead cluster, T2)."""
    after = conf("REDISPATCH_AFTER_SECONDS") if after is None else after
    cutoff, cutoff_params = journal.now_sql(-after)
    now, now_params = journal.now_sql()
    rows = _select(
        f"SELECT id FROM {journal.RUN} WHERE status = 'queued' AND dispatched_at < {cutoff} "
        f"ORDER BY dispatched_at LIMIT {int(limit)}",
        cutoff_params,
    )
    for (run_id,) in rows:
        with _one_run(int(run_id)):
            row = journal.update_run(
                int(run_id),
                set_sql=f"dispatched_at = {now}",
                set_params=now_params,
                where_sql=f"status = 'queued' AND dispatched_at < {cutoff}",
                where_params=cutoff_params,
            )
            if row is not None:
                dispatch(int(run_id))
                result.redispatched += 1


