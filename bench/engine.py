"""Engine benchmark: checkpoint cost, payload and history scaling, throughput, latency, takeover, memory.

    cd /work/main && .venv/bin/python bench/engine.py [--db sqlite|postgres|both] [--rounds 3] [--quick]

Prints one JSON document and writes bench/results/engine-<db>.json per database. Each database is
fresh: a temporary SQLite file (DURABLE_SQLITE_PATH) or the PostgreSQL database `durable_bench`
(dropped and created), migrated, then measured by a child process of this script running with that
environment. In-process figures drive runs with `executor.drive` in the child; worker figures start
real `durable worker` processes (each in its own session, so its whole process group can be
SIGKILLed). Figures are medians over `--rounds` rounds; ratios use a baseline measured in the same run.
Processes run with DEBUG=0 unless DEBUG is set, as deployed workers do. The machine is shared: the
script waits (--quiet-wait) for other work to calm down and records how busy it found the CPUs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, bench_env, child_json, emit, fresh_database, measure_each_database  # noqa: E402

# A worker that also knows the bench workflows (django-q2 forks its processes from this one).
WORKER_SCRIPT = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
import bench.workflows  # noqa: F401  registers bench.* workflows
from django.core.management import call_command
call_command("durable", "worker", *sys.argv[1:])
"""

TARGETS = {
    "noop_step_ms": 0.4,
    "write_txns_per_step": 1.0,
    "history_ratio": 1.2,
    "conversation_ratio": 1.2,
    "throughput_steps_per_s_postgresql": 2000.0,
    "start_latency_p50_ms": 100.0,
    "takeover_p50_s": 2.5,
    "worker_rss_mb": 150.0,
}


# ==================================================================================================
# parent: fresh databases, one child process per database
# ==================================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples (a smoke run)")
    parser.add_argument("--only", default="", help="comma list of sections (floor,noop,payload,history,"
                        "conversation,throughput,latency,takeover); default all")
    parser.add_argument("--quiet-wait", type=float, default=180.0, metavar="SECONDS",
                        help="before each database, wait up to this long for the machine's CPUs to be "
                        "mostly idle (other processes skew every figure); 0 to skip")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    measure_each_database("engine", args.db, args.quiet_wait, prepare_database,
                          lambda db, env: run_child(db, env, args))


def prepare_database(db: str) -> tuple[dict[str, str], Callable[[], None]]:
    # as deployed workers run (DURABLE_PRODUCTION): DEBUG's query log taxes every Django cursor
    env = bench_env(DEBUG=os.environ.get("DEBUG", "0"))
    return env, fresh_database(db, "durable_bench", env)


def run_child(db: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--db", db, "--rounds", str(args.rounds)]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    print(f"== {db}: measuring ({args.rounds} rounds{', quick' if args.quick else ''})", file=sys.stderr)
    return judge(child_json(cmd, env, db))


def judge(r: dict[str, Any]) -> dict[str, Any]:
    """Put each target beside its figure."""

    def check(section: str, key: str, target: float, *, at_most: bool = True, label: str = "") -> None:
        if section not in r or r[section].get(key) is None:
            return
        value = r[section][key]
        verdict = {
            "target": f"{'<=' if at_most else '>='} {target}{label}",
            "ok": value <= target if at_most else value >= target,
        }
        r[section].setdefault("targets", {})[key] = verdict
        summary[f"{section}.{key}"] = {"value": value, **verdict}

    summary: dict[str, Any] = {}

    check("noop", "ms_per_step", TARGETS["noop_step_ms"], label=" ms")
    check("noop", "write_txns_per_step", TARGETS["write_txns_per_step"])
    check("history", "ratio_1000_vs_10", TARGETS["history_ratio"])
    check("conversation", "ratio_100KB_vs_200B", TARGETS["conversation_ratio"])
    if r.get("vendor") == "postgresql":
        check("throughput", "steps_per_s", TARGETS["throughput_steps_per_s_postgresql"], at_most=False)
    check("start_latency", "p50_ms", TARGETS["start_latency_p50_ms"], label=" ms (p50 < 100)")
    check("takeover", "p50_s", TARGETS["takeover_p50_s"], label=" s (p50 < 2.5, to next step start)")
    check("worker_rss", "max_mb", TARGETS["worker_rss_mb"], label=" MB per process")
    if "noop" in r:
        summary["noop.x_floor (report only)"] = {"value": r["noop"]["x_floor"], "target": "none (a multiple of "
                                                 "one INSERT+COMMIT measured in the same run)", "ok": None}
    return {"targets": summary, **r}


# ==================================================================================================
# child: measurements against the database named by the environment
# ==================================================================================================


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    import bench.workflows  # noqa: F401

    quick = args.quick
    sections = set(filter(None, args.only.split(","))) or {
        "floor", "noop", "payload", "history", "conversation", "throughput", "latency", "takeover",
    }
    out: dict[str, Any] = {
        "db": args.db,
        "vendor": connection.vendor,
        "rounds": args.rounds,
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"durable": settings.DURABLE, "q_poll": settings.Q_CLUSTER["poll"],
                     "q_workers": settings.Q_CLUSTER["workers"], "debug": settings.DEBUG},
    }
    counter = TxCounter.install()
    rounds: dict[str, list[Any]] = {}

    def keep(key: str, value: Any) -> None:
        rounds.setdefault(key, []).append(value)

    for round_no in range(args.rounds):
        log(f"round {round_no + 1}/{args.rounds}")
        if "floor" in sections or "noop" in sections:
            keep("floor", measure_floor(500 if quick else 2000))
        if "noop" in sections:
            keep("noop", measure_noop(counter, 200))
        if "payload" in sections:
            keep("payload", {
                label: measure_steps("bench.payload", {"steps": steps, "size": size})
                for label, size, steps in (
                    ("200B", 200, 200), ("10KB", 10_000, 200), ("100KB", 100_000, 50 if quick else 200),
                )
            })
        if "history" in sections:
            keep("history", measure_history(1100))
        if "conversation" in sections:
            keep("conversation", {
                f"{mode}_{label}": measure_steps("bench.conversation", {"steps": 100, "history": size, "mode": mode})
                for mode in ("agent", "naive") for label, size in (("200B", 200), ("100KB", 100_000))
            })

    med = statistics.median
    if "floor" in rounds:
        out["floor"] = {
            "insert_commit_ms": med(r["autocommit_ms"] for r in rounds["floor"]),
            "begin_insert_commit_ms": med(r["atomic_ms"] for r in rounds["floor"]),
            "what": "one single-row INSERT into a scratch table through the same Django connection, "
                    "committed: insert_commit = the INSERT in autocommit (its own transaction, COMMIT "
                    "implicit: one round trip); begin_insert_commit = BEGIN, INSERT, COMMIT in "
                    "transaction.atomic() (three round trips)",
            "rounds": rounds["floor"],
        }
    if "noop" in rounds:
        floor_ms = out["floor"]["insert_commit_ms"]
        noop_ms = med(r["ms_per_step"] for r in rounds["noop"])
        out["noop"] = {
            "ms_per_step": noop_ms,
            "x_floor": round(noop_ms / floor_ms, 2),
            "x_floor_begin_insert_commit": round(noop_ms / out["floor"]["begin_insert_commit_ms"], 2),
            "write_txns_per_step": med(r["write_txns_per_step"] for r in rounds["noop"]),
            "explicit_commits_per_step": med(r["commits_per_step"] for r in rounds["noop"]),
            "statements_per_step": med(r["statements_per_step"] for r in rounds["noop"]),
            "steps": 200,
            "what": "one run of 200 sequential no-op ctx.step calls driven in-process; loop time / 200. "
                    "x_floor = that / insert_commit. Statements and transactions are counted in a second "
                    "identical run through Django's execute_wrapper: write transactions = COMMITs of "
                    "transactions that wrote + writing statements sent in autocommit (on PostgreSQL the "
                    "checkpoint is one statement in autocommit, so it has no explicit COMMIT)",
            "rounds": rounds["noop"],
        }
    if "payload" in rounds:
        out["payload"] = {
            f"{label}_ms_per_step": med(r[label] for r in rounds["payload"]) for label in ("200B", "10KB", "100KB")
        }
        out["payload"]["rounds"] = rounds["payload"]
    if "history" in rounds:
        early = med(r["step_10_ms"] for r in rounds["history"])
        late = med(r["step_1000_ms"] for r in rounds["history"])
        out["history"] = {
            "step_10_ms": early,
            "step_1000_ms": late,
            "ratio_1000_vs_10": round(late / early, 3),
            "what": "one run of 1,100 no-op steps; median per-step time over steps 10-109 and 1000-1099",
            "rounds": rounds["history"],
        }
    if "conversation" in rounds:
        conv = {key: med(r[key] for r in rounds["conversation"]) for key in rounds["conversation"][0]}
        out["conversation"] = {
            "200B_ms_per_step": conv["agent_200B"],
            "100KB_ms_per_step": conv["agent_100KB"],
            "ratio_100KB_vs_200B": round(conv["agent_100KB"] / conv["agent_200B"], 3),
            "naive_200B_ms_per_step": conv["naive_200B"],
            "naive_100KB_ms_per_step": conv["naive_100KB"],
            "naive_ratio_100KB_vs_200B": round(conv["naive_100KB"] / conv["naive_200B"], 3),
            "what": "a run whose first step journals a conversation of 200 B or 100 KB, then 100 model "
                    "steps that each see the whole conversation and return one new 200-byte message. "
                    "Headline (as durable.agents records a model call): the step's argument is only what "
                    "is new (last message + the seq it builds on). naive_*: the whole conversation is "
                    "the step's argument, so its input record (capped at 64 KB) carries it every step",
            "rounds": rounds["conversation"],
        }

    if sections & {"throughput", "latency"}:
        out.update(measure_workers(args.rounds, quick, sections))
    if "takeover" in sections:
        out["takeover"] = measure_takeover(2 if quick else 7)
    emit(out)


def log(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


class TxCounter:
    """Counts statements, commits and write transactions on this thread's default connection."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")
    CTE_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self.write_txns = 0
        self._dirty = False

    @classmethod
    def install(cls) -> TxCounter:
        from django.db import connections

        wrapper = connections["default"]  # the thread's wrapper object: survives reconnects
        counter = cls()
        counter.wrapper = wrapper
        commit, rollback = wrapper._commit, wrapper._rollback

        def counted_commit() -> None:
            commit()
            if counter not in wrapper.execute_wrappers:
                return
            counter.commits += 1
            if counter._dirty:
                counter.write_txns += 1
            counter._dirty = False

        def counted_rollback() -> None:
            rollback()
            counter._dirty = False

        wrapper._commit = counted_commit
        wrapper._rollback = counted_rollback
        return counter

    def enable(self) -> None:
        """Counting goes through Django's execute_wrapper, which also makes the engine send its
        checkpoint through Django's cursor: count in a run of its own, never in a timed one."""
        self.wrapper.execute_wrappers.append(self)

    def disable(self) -> None:
        self.wrapper.execute_wrappers.remove(self)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        self.statements += 1
        head = sql.lstrip()[:6].upper()
        if head in self.WRITES or (head.startswith("WITH") and self.CTE_WRITE.search(sql)):
            if context["connection"].in_atomic_block:
                self._dirty = True
            else:
                self.write_txns += 1  # autocommit: the statement is its own transaction
        return execute(sql, params, many, context)

    def snapshot(self) -> tuple[int, int, int]:
        return (self.statements, self.commits, self.write_txns)


# -- in-process ------------------------------------------------------------------------------------


def measure_floor(n: int) -> dict[str, float]:
    from django.db import connection, transaction

    pk = "bigserial PRIMARY KEY" if connection.vendor == "postgresql" else "integer PRIMARY KEY AUTOINCREMENT"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS bench_floor (id {pk}, v text NOT NULL)")
    sql = "INSERT INTO bench_floor (v) VALUES (%s)"
    result = {}
    with connection.cursor() as cursor:
        for label, atomic in (("atomic_ms", True), ("autocommit_ms", False)):
            for warm in (True, False):
                count = 100 if warm else n
                started = time.perf_counter()
                for _ in range(count):
                    if atomic:
                        with transaction.atomic():
                            cursor.execute(sql, ["x"])
                    else:
                        cursor.execute(sql, ["x"])
                elapsed = time.perf_counter() - started
            result[label] = round(elapsed / n * 1000, 4)
        cursor.execute("DELETE FROM bench_floor")
    return result


def drive_probed(workflow: str, input: dict[str, Any], probe: Any) -> None:
    import bench.workflows as bw
    from durable import control, executor

    run = control.start(workflow, input)
    bw.PROBE = probe
    try:
        outcome = executor.drive(run.pk)
    finally:
        bw.PROBE = None
    if outcome != "succeeded":
        raise RuntimeError(f"{workflow} run {run.pk}: {outcome}")


def measure_noop(counter: TxCounter, steps: int) -> dict[str, float]:
    from bench.workflows import Probe

    drive_probed("bench.noop", {"steps": 5}, Probe())  # warm-up
    timed = Probe()
    drive_probed("bench.noop", {"steps": steps}, timed)
    probe = Probe(counters=counter.snapshot)  # a second, identical run, counted
    counter.enable()
    try:
        drive_probed("bench.noop", {"steps": steps}, probe)
    finally:
        counter.disable()
    (s0, c0, w0), (s1, c1, w1) = probe.counts
    return {
        "ms_per_step": round((timed.marks[1] - timed.marks[0]) / steps * 1000, 4),
        "ms_per_step_counted_run": round((probe.marks[1] - probe.marks[0]) / steps * 1000, 4),
        "statements_per_step": round((s1 - s0) / steps, 3),
        "commits_per_step": round((c1 - c0) / steps, 3),
        "write_txns_per_step": round((w1 - w0) / steps, 3),
    }


def measure_steps(workflow: str, input: dict[str, Any]) -> float:
    from bench.workflows import Probe

    probe = Probe()
    drive_probed(workflow, input, probe)
    return round((probe.marks[1] - probe.marks[0]) / int(input["steps"]) * 1000, 4)


def measure_history(steps: int) -> dict[str, float]:
    from bench.workflows import Probe

    probe = Probe(every_step=True)
    drive_probed("bench.noop", {"steps": steps}, probe)
    # marks: [start, after step 0, after step 1, ..., after step N-1, end]; step i took marks[i+1]-marks[i]
    times = [(probe.marks[i + 1] - probe.marks[i]) * 1000 for i in range(steps)]
    return {
        "step_10_ms": round(statistics.median(times[10:110]), 4),
        "step_1000_ms": round(statistics.median(times[1000:1100]), 4),
        "mean_10_ms": round(statistics.fmean(times[10:110]), 4),
        "mean_1000_ms": round(statistics.fmean(times[1000:1100]), 4),
    }


# -- worker processes ------------------------------------------------------------------------------


class Worker:
    """A `durable worker` subprocess in its own session (its pid is its process group id)."""

    def __init__(self, name: str, workers: int | None = None):
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"worker-{os.environ.get('DATABASE_URL') and 'pg' or 'sqlite'}-{name}.log"
        cmd = [sys.executable, "-c", WORKER_SCRIPT]
        if workers:
            cmd += ["--workers", str(workers)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.expected = 4 + (workers or 2)  # main, sentinel, monitor, pusher, workers

    def pids(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == self.pid and fields[0] != "Z":  # pgrp, state
                found.append(int(entry))
        return sorted(found)

    def wait_started(self, timeout: float = 30) -> None:
        wait_until(lambda: len(self.pids()) >= self.expected, timeout, f"worker {self.pid} start")

    def cpu_s(self) -> dict[int, float]:
        return {pid: proc_cpu_s(pid) for pid in self.pids()}

    def rss_mb(self) -> dict[int, float]:
        sizes = {}
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            sizes[pid] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                pass
        return sizes

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._log.close()


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def postgres_cpu_s() -> float:
    """CPU of every PostgreSQL server process (all databases: other users of the server count too)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            total += proc_cpu_s(int(entry))
    return total


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def runs_finished(first: int, last: int) -> bool:
    from durable.models import TERMINAL, Run

    return not Run.objects.filter(pk__gte=first, pk__lte=last).exclude(status__in=TERMINAL).exists()


def warm_up(count: int = 4) -> None:
    from durable import control

    ids = [control.start("bench.noop", {"steps": 2}).pk for _ in range(count)]
    wait_until(lambda: runs_finished(ids[0], ids[-1]), 60, "warm-up runs")


def measure_workers(rounds: int, quick: bool, sections: set[str]) -> dict[str, Any]:
    from django.db.models import Count, Max

    from durable import control
    from durable.models import Run

    out: dict[str, Any] = {}
    worker = Worker("throughput")
    try:
        worker.wait_started()
        warm_up()
        if "latency" in sections:
            samples = []
            for _ in range(10 if quick else 20):
                time.sleep(random.uniform(0.1, 0.25))
                started = time.time()
                run = control.start("bench.first", {})
                wait_until(lambda: runs_finished(run.pk, run.pk), 30, f"run {run.pk}", interval=0.005)
                run.refresh_from_db()
                samples.append((float(run.output) - started) * 1000)
            samples.sort()
            out["start_latency"] = {
                "p50_ms": round(statistics.median(samples), 1),
                "p95_ms": round(samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))], 1),
                "samples": len(samples),
                "all_ms": [round(s, 1) for s in samples],
                "what": "live idle worker (2 processes); time from before control.start() to the first "
                        "step's body starting (wall clock recorded by the step)",
            }
        if "throughput" in sections:
            results = []
            runs_n, steps_n = 200, 10
            for round_no in range(1 if quick else rounds):
                log(f"throughput round {round_no + 1}")
                time.sleep(0.5)
                cpu0, pg0, me0 = worker.cpu_s(), postgres_cpu_s(), time.process_time()
                started = time.time()
                ids = [control.start("bench.noop", {"steps": steps_n}).pk for _ in range(runs_n)]
                start_s = time.time() - started
                me1 = time.process_time()
                wait_until(lambda: runs_finished(ids[0], ids[-1]), 300, "throughput runs", interval=0.05)
                cpu1, pg1 = worker.cpu_s(), postgres_cpu_s()
                runs = Run.objects.filter(pk__gte=ids[0], pk__lte=ids[-1])
                last = runs.aggregate(last=Max("finished_at"))["last"]
                statuses = dict(runs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
                elapsed = last.timestamp() - started
                results.append({
                    "seconds": round(elapsed, 3),
                    "steps_per_s": round(runs_n * steps_n / elapsed, 1),
                    "start_all_s": round(start_s, 3),
                    "statuses": statuses,
                    "cpu_s": {
                        "starter (this process, starting the runs)": round(me1 - me0, 3),
                        "worker processes": sorted((round(cpu1.get(p, 0) - t, 3) for p, t in cpu0.items()),
                                                   reverse=True),
                        "postgres server (all databases)": round(pg1 - pg0, 3),
                    },
                })
            out["throughput"] = {
                "steps_per_s": statistics.median(r["steps_per_s"] for r in results),
                "runs": runs_n,
                "steps_per_run": steps_n,
                "worker_processes": worker.expected - 4,
                "what": "one `durable worker --workers 2`; 200 runs x 10 no-op steps started from this "
                        "process; steps/s from the first start to the last finished_at",
                "rounds": results,
            }
        sizes = worker.rss_mb()
        out["worker_rss"] = {
            "max_mb": max(sizes.values()),
            "total_mb": round(sum(sizes.values()), 1),
            "per_process_mb": sorted(sizes.values(), reverse=True),
            "what": "VmRSS of every process of the worker's process group (main + sweeper, django-q2 "
                    "sentinel, pusher, monitor, workers) after the throughput runs",
        }
    finally:
        worker.kill()
    return out


def measure_takeover(samples: int) -> dict[str, Any]:
    from durable import control
    from durable.models import Run, Step

    workers = [Worker("a"), Worker("b")]
    spawned = 2
    results = []
    try:
        for w in workers:
            w.wait_started()
        warm_up()
        for sample in range(samples):
            run = control.start("demo.analysis", {"chunks": 20, "step_ms": 200})
            wait_until(
                lambda: Run.objects.filter(pk=run.pk, status="running", next_seq__gte=3).exists(),
                30, f"run {run.pk} at step 3",
            )
            time.sleep(random.uniform(0, 0.2))  # land anywhere inside a step
            owner, next_seq = Run.objects.values_list("lease_owner", "next_seq").get(pk=run.pk)
            pgid = os.getpgid(int(owner.rsplit(":", 1)[1]))
            victim = next(w for w in workers if w.pid == pgid)  # only ever kill our own workers
            os.killpg(pgid, signal.SIGKILL)
            killed_at = time.time()
            victim.kill()
            step = wait_until(
                lambda: Step.objects.filter(run_id=run.pk, seq__gte=next_seq).exclude(worker=owner)
                .order_by("seq").first(),
                30, f"takeover of run {run.pk}",
            )
            results.append({
                "to_next_step_start_s": round(step.started_at.timestamp() - killed_at, 3),
                "to_next_checkpoint_s": round(step.finished_at.timestamp() - killed_at, 3),
                "step_ms": 200,
            })
            log(f"takeover sample {sample + 1}: {results[-1]}")
            control.cancel(run.pk)
            workers.remove(victim)
            spawned += 1
            replacement = Worker(chr(ord("a") + spawned - 1))
            workers.append(replacement)
            replacement.wait_started()
            time.sleep(1.0)  # let its cluster finish starting before the next kill
    finally:
        for w in workers:
            w.kill()
    starts = [r["to_next_step_start_s"] for r in results]
    return {
        "p50_s": round(statistics.median(starts), 3),
        "max_s": max(starts),
        "p50_to_next_checkpoint_s": round(statistics.median(r["to_next_checkpoint_s"] for r in results), 3),
        "samples": len(results),
        "what": "two live `durable worker` processes (default settings); demo.analysis with 20 x 200 ms "
                "steps; SIGKILL of the lease holder's whole process group mid-step; time to the next "
                "step's body starting on the other worker (its started_at), and to its checkpoint",
        "rounds": results,
    }


if __name__ == "__main__":
    main()
