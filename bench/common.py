"""What every benchmark script shares: fresh databases, a child process per database that reports
one JSON document, and waiting for a quiet machine (other processes skew every figure)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
MARKER = "BENCH-JSON:"  # the child's result line on stdout


def bench_env(**overrides: str) -> dict[str, str]:
    """The environment of a bench child: this checkout's settings, quiet logs, plus `overrides`."""
    env = os.environ.copy()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.setdefault("DURABLE_LOG_LEVEL", "WARNING")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(overrides)
    return env


def fresh_database(db: str, name: str, env: dict[str, str]) -> Callable[[], None]:
    """Point `env` at a new, migrated database: a temporary SQLite file, or the PostgreSQL database
    `name` (dropped and created; kept afterwards for inspection). Returns the cleanup."""
    if db == "sqlite":
        tmp = tempfile.mkdtemp(prefix=f"{name}-")
        env.pop("DATABASE_URL", None)
        env["DURABLE_SQLITE_PATH"] = os.path.join(tmp, "bench.sqlite3")

        def cleanup() -> None:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

        def cleanup() -> None:
            pass  # dropped by the next run
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True
    )
    return cleanup


def child_json(cmd: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run a bench child and return the JSON it reported on its MARKER line."""
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench child for {what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return dict(json.loads(lines[-1][len(MARKER):]))


def emit(result: Any) -> None:
    """What a child prints for its parent."""
    print(MARKER + json.dumps(result), flush=True)


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_wait: float, threshold: float = 0.2) -> dict[str, Any]:
    """Wait (up to max_wait s) until other processes leave the CPUs mostly idle; say what was found."""
    started = time.monotonic()
    if max_wait <= 0:
        return {"cpu_busy": None, "waited_s": 0.0, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    busy = cpu_busy()
    while busy > threshold and time.monotonic() - started < max_wait:
        busy = cpu_busy(2.0)
    if busy > threshold:
        print(f"   warning: the machine is {busy:.0%} busy with other work; figures will be noisy", file=sys.stderr)
    return {"cpu_busy": round(busy, 2), "waited_s": round(time.monotonic() - started, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def measure_each_database(
    name: str,
    db_choice: str,
    quiet_wait: float,
    prepare: Callable[[str], tuple[dict[str, str], Callable[[], None]]],
    measure: Callable[[str, dict[str, str]], dict[str, Any]],
) -> None:
    """For each database: a fresh one, a quiet machine, one child's figures; write
    bench/results/<name>-<db>.json and print the whole report."""
    dbs = ["sqlite", "postgres"] if db_choice == "both" else [db_choice]
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    for db in dbs:
        env, cleanup = prepare(db)
        try:
            quiet = wait_quiet(quiet_wait)
            result[db] = measure(db, env)
            machine = result[db].setdefault("machine", {})
            machine["before"] = quiet
            machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            cleanup()
        (RESULTS / f"{name}-{db}.json").write_text(json.dumps(result[db], indent=2) + "\n")
    print(json.dumps(result, indent=2))
