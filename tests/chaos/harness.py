"""Real-process crash harness: start `durable worker` process trees against the test database,
SIGKILL / SIGSTOP / SIGCONT them as whole process groups, and wait for database conditions.

Every worker runs in its own session (`start_new_session=True`), so its process group holds the
cluster's main process (with the sweeper), the django-q2 sentinel, pusher, monitor and workers.
Signals always go to the whole group: killing one idle django-q2 worker can deadlock the cluster
(STACK-NOTES T2), which is not the fault these tests are about.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
RESULTS_DIR = BASE_DIR / "var" / "chaos"
READY_MARK = (
    "worker started"  # logged by durable.worker once the cluster is up and the sweeper starts
)


def wait_until[T](
    predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def database_env() -> dict[str, str]:
    """The environment that points a subprocess at the database this test process uses."""
    settings = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DURABLE_SQLITE_PATH"}}
    if connection.vendor == "sqlite":
        env["DURABLE_SQLITE_PATH"] = str(settings["NAME"])
    else:
        user = quote(settings.get("USER") or "", safe="")
        password = quote(settings.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings.get("HOST") or "127.0.0.1"
        port = settings.get("PORT") or "5432"
        env["DATABASE_URL"] = f"postgres://{auth}{host}:{port}/{settings['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DURABLE_Q_LOG_LEVEL", "INFO")  # reincarnations show in the worker log
    return env


def group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in {"Z", "X"}:
            members.add(int(entry))
    return members


def pid_of(worker_id: str) -> int:
    """The pid in a lease owner or Step.worker value ("host:pid")."""
    return int(worker_id.rsplit(":", 1)[1])


@dataclass
class Worker:
    """One `durable worker` process tree."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    pids: set[int] = field(
        default_factory=set
    )  # every process seen in its group, dead ones included

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return bool(self.refresh())

    def refresh(self) -> set[int]:
        members = group_members(self.pgid)
        self.pids |= members
        return members

    def did(self, worker_id: str) -> bool:
        """Whether a lease owner / Step.worker value names one of this worker's processes."""
        self.refresh()
        return bool(worker_id) and pid_of(worker_id) in self.pids

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(
            lambda: READY_MARK in self.log() or self._exited(),
            timeout,
            f"worker {self.name} to start",
        )
        if self._exited():
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}")
        self.refresh()

    def _exited(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        self.refresh()
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> float:
        """SIGKILL the whole tree; returns the wall-clock time of the kill. Waits until it is gone."""
        self.refresh()
        killed_at = time.time()
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        wait_until(
            lambda: not group_members(self.pgid), 10, f"worker {self.name}'s processes to die"
        )
        return killed_at

    def stop(self) -> None:
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.signal(signal.SIGCONT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class WorkerPool:
    """The workers of one test. `stop_all()` (fixture teardown) kills every process group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.workers: list[Worker] = []

    def start(
        self, *, env: dict[str, str] | None = None, test_workflows: bool = False, ready: bool = True
    ) -> Worker:
        """Start `manage.py durable worker`; with test_workflows, the same command through a wrapper that
        first imports tests/chaos/chaos_workflows.py (and the fault hooks its CHAOS_* variables ask for)."""
        count = len(self.workers)
        name = chr(ord("A") + count) if count < 26 else f"W{count}"
        log_path = self.log_dir / f"worker-{name}.log"
        if test_workflows:
            cmd = [sys.executable, "-m", "tests.chaos.run_worker", "durable", "worker"]
        else:
            cmd = [sys.executable, "manage.py", "durable", "worker"]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=BASE_DIR,
                env={**database_env(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, proc, log_path)
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def owner(self, worker_id: str) -> Worker:
        """The worker one of whose processes is `worker_id` (a lease owner or Step.worker)."""
        for worker in self.workers:
            if worker.did(worker_id):
                return worker
        raise AssertionError(f"{worker_id!r} is none of the workers' processes")

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGCONT)  # a stopped process still dies of SIGKILL, but be plain
            worker.signal(signal.SIGKILL)
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            wait_until(
                lambda w=worker: not group_members(w.pgid), 10, f"worker {worker.name} to die"
            )

    def report(self) -> str:
        return "\n".join(
            f"--- worker {w.name} (pgid {w.pgid}) log tail ---\n{w.tail()}" for w in self.workers
        )


# -- the external side effects of steps ---------------------------------------------------------------
def effect_counts(path: Path) -> Counter[str]:
    """How often each idempotency key ("<run>:<seq>") was written to an effects file."""
    if not path.exists():
        return Counter()
    return Counter(line.strip() for line in path.read_text().splitlines() if line.strip())


def seq_counts(path: Path, run_id: int) -> Counter[int]:
    counts = effect_counts(path)
    prefix = f"{run_id}:"
    return Counter(
        {int(key[len(prefix) :]): n for key, n in counts.items() if key.startswith(prefix)}
    )


# -- the takeover measurements ------------------------------------------------------------------------
def record_takeover(sample: dict[str, Any]) -> dict[str, Any]:
    """Append a sample to var/chaos/takeover.json (all samples plus medians per database)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "takeover.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    samples = data.get("samples", [])
    samples.append(sample)
    summary: dict[str, Any] = {}
    for key in sorted({(s["db"], s["variant"]) for s in samples}):
        values = [s["takeover_s"] for s in samples if (s["db"], s["variant"]) == key]
        starts = [s["to_step_start_s"] for s in samples if (s["db"], s["variant"]) == key]
        summary[f"{key[0]}/{key[1]}"] = {
            "n": len(values),
            "median_takeover_s": round(statistics.median(values), 3),
            "median_to_step_start_s": round(statistics.median(starts), 3),
        }
    path.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2) + "\n")
    return summary


# -- the database side ---------------------------------------------------------------------------------
def wait_status(run_id: int, *statuses: str, timeout: float = 30) -> Any:
    """Wait until the run is in one of `statuses`; returns it."""
    from durable.models import Run

    seen: list[str] = []

    def reached() -> Any:
        run = Run.objects.get(pk=run_id)
        seen.append(run.status)
        return run if run.status in statuses else None

    try:
        return wait_until(reached, timeout, f"run {run_id} to be {' or '.join(statuses)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is {seen[-1] if seen else '?'}") from None


def probe(timeout: float = 30) -> None:
    """Start a one-step run and wait for it: proves some live worker is taking and finishing tasks."""
    from durable import control
    from durable.models import Status

    run = control.start("demo.analysis", {"chunks": 1, "step_ms": 1})
    wait_status(run.pk, Status.SUCCEEDED, timeout=timeout)


def write_lock_held() -> bool:
    """Whether some session holds a write lock or an open transaction that would block other writers.

    SQLite: try to take the database's single write lock without waiting. PostgreSQL: look for other
    sessions inside a transaction (they may hold row locks) or in the middle of a statement.
    """
    if connection.vendor == "sqlite":
        import sqlite3

        probe_conn = sqlite3.connect(
            connection.settings_dict["NAME"], timeout=0, isolation_level=None
        )
        try:
            probe_conn.execute("BEGIN IMMEDIATE")
            probe_conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe_conn.close()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction', "
            "'idle in transaction (aborted)') AND backend_type = 'client backend'"
        )
        return bool(cursor.fetchone()[0])


def freeze_outside_transaction(worker: Worker, attempts: int = 50) -> None:
    """SIGSTOP a worker's tree at a moment when it holds no transaction open.

    A process frozen inside a write transaction blocks every other writer (SQLite: the whole database;
    PostgreSQL: the rows it locked) until it resumes, so no other worker could take its runs over.
    That is a limit of lock-based databases, not what the zombie test is about; so if the freeze lands
    inside a transaction, thaw and try again.
    """
    for _ in range(attempts):
        worker.stop()
        if not write_lock_held():
            return
        worker.cont()
        wait_until(lambda: not write_lock_held(), 5, "the thawed worker to finish its transaction")
    raise AssertionError(
        f"could not freeze worker {worker.name} outside a transaction in {attempts} tries"
    )
