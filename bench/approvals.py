"""Approvals benchmark: the inbox with 10,000 pending approvals, and what 10,000 runs waiting for
approval cost the workers.

    cd /work/main && .venv/bin/python bench/approvals.py [--db sqlite|postgres|both] [--rounds 3] [--quick]

Prints one JSON document and writes bench/results/approvals-<db>.json per database. Each database is
fresh (a temporary SQLite file, or the PostgreSQL database `durable_bench_approvals`, dropped and
created), migrated, then measured by a child process of this script with that environment (DEBUG
off, as in production). Figures are medians over `--rounds` rounds.

- inbox: server time of GET /approvals/ (the reviewer's first page: 50 cards, the count, the total,
  the tool list) through Django's test client in the child, with 10,000 pending approvals
  bulk-created (their runs parked as the engine parks them, each with a completed step, the waiting
  approval step and the "requested" audit record). Also the next page, a filtered page, the detail,
  the history and the JSON list. Target: under 200 ms.
- waiting_cost: throughput of 200 runs x 10 no-op steps through one real `durable worker`
  (bench/engine.py's Worker, the same measurement as its throughput section) on a database without
  and one with the 10,000 waiting runs, in pairs run back to back. Target: a drop under 10 %. On a
  machine shared with other work the pool's wall-clock throughput is noisy, so each side also
  reports figures that other processes barely move: the worker processes' CPU per step, the
  engine's in-process cost per checkpointed step, and one pass of the sweeper.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, bench_env, child_json, emit, fresh_database, wait_quiet  # noqa: E402
sys.path.insert(0, str(ROOT))

from bench.engine import Worker, runs_finished, wait_until, warm_up  # noqa: E402

PENDING = 10_000
TARGETS = {"inbox_ms": 200.0, "throughput_drop": 0.10}


# ==================================================================================================
# parent: fresh databases, one child process per measurement
# ==================================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 pending approvals, 1 round (a smoke run)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="before each throughput pair, wait up to this long for the CPUs to be mostly idle; "
                        "0 to skip")
    parser.add_argument("--child", choices=["setup", "throughput", "inbox"], help=argparse.SUPPRESS)
    parser.add_argument("--pending", type=int, default=PENDING, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.pending, args.rounds = 1_000, 1
    if args.child:
        child(args)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for db in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        report[db] = measure(db, args)
        (RESULTS / f"approvals-{db}.json").write_text(json.dumps(report[db], indent=2) + "\n")
    print(json.dumps(report, indent=2))


def measure(db: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two databases: `base` (empty) and `loaded` (the pending approvals). Throughput is measured in
    pairs, base and loaded back to back in alternating order, so that load from other processes
    drifting over the minutes of the run weighs on both sides alike."""
    base_env, base_cleanup = prepare_database(db, "base")
    loaded_env, loaded_cleanup = prepare_database(db, "loaded")
    try:
        print(f"== {db}: {args.pending:,} runs waiting for approval", file=sys.stderr)
        setup = run_child(loaded_env, "setup", args)
        pairs = []
        for round_no in range(args.rounds):
            quiet = wait_quiet(args.quiet_wait) if args.quiet_wait else {}
            order = [("base", base_env), ("loaded", loaded_env)]
            if round_no % 2:
                order.reverse()
            pair: dict[str, Any] = {"machine_before": quiet}
            for name, env in order:
                print(f"== {db}: throughput round {round_no + 1}, {name}", file=sys.stderr)
                pair[name] = run_child(env, "throughput", args)
            pair["ratio"] = round(pair["loaded"]["steps_per_s"] / pair["base"]["steps_per_s"], 4)
            pairs.append(pair)
        print(f"== {db}: inbox", file=sys.stderr)
        inbox = run_child(loaded_env, "inbox", args)
    finally:
        base_cleanup()
        loaded_cleanup()
    base = statistics.median(p["base"]["steps_per_s"] for p in pairs)
    loaded = statistics.median(p["loaded"]["steps_per_s"] for p in pairs)
    ratio = statistics.median(p["ratio"] for p in pairs)
    cpu_base = statistics.median(p["base"]["worker_cpu_ms_per_step"] for p in pairs)
    cpu_loaded = statistics.median(p["loaded"]["worker_cpu_ms_per_step"] for p in pairs)
    report = {
        "db": db,
        "rounds": args.rounds,
        "pending": args.pending,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "inbox": inbox,
        "waiting_cost": {
            "steps_per_s_without": base,
            "steps_per_s_with_waiting": loaded,
            "drop": round(max(0.0, 1 - ratio), 4),
            "worker_cpu_ms_per_step_without": cpu_base,
            "worker_cpu_ms_per_step_with_waiting": cpu_loaded,
            "engine_ms_per_step_without": statistics.median(p["base"]["engine_ms_per_step"] for p in pairs),
            "engine_ms_per_step_with_waiting": statistics.median(p["loaded"]["engine_ms_per_step"] for p in pairs),
            "sweep_ms_without": statistics.median(p["base"]["sweep_ms"] for p in pairs),
            "sweep_ms_with_waiting": statistics.median(p["loaded"]["sweep_ms"] for p in pairs),
            "waiting_runs": args.pending,
            "create_waiting_s": setup["create_waiting_s"],
            "what": "one `durable worker` (2 processes) on a fresh database, 200 runs x 10 no-op steps "
                    "(bench.noop) started from the measuring process, steps/s from the first start to the "
                    f"last finished_at; `with`: the same on a database holding {args.pending:,} runs parked in "
                    "waiting_approval (no lease, no task, no worker). drop = 1 - median of the per-pair "
                    "ratios with/without (pairs run back to back, alternating order)",
            "pairs": pairs,
        },
    }
    return judge(report)


def prepare_database(db: str, name: str) -> tuple[dict[str, str], Callable[[], None]]:
    env = bench_env(DEBUG="0")
    return env, fresh_database(db, f"durable_bench_approvals_{name}", env)


def run_child(env: dict[str, str], mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--rounds", str(args.rounds),
           "--pending", str(args.pending)]
    return child_json(cmd, env, mode)


def judge(r: dict[str, Any]) -> dict[str, Any]:
    first_page = r["inbox"]["first_page_ms"]
    r["inbox"]["target"] = {"target": f"< {TARGETS['inbox_ms']:.0f} ms", "ok": first_page < TARGETS["inbox_ms"]}
    drop = r["waiting_cost"]["drop"]
    r["waiting_cost"]["target"] = {"target": f"drop < {TARGETS['throughput_drop']:.0%}",
                                   "ok": drop < TARGETS["throughput_drop"]}
    return r


# ==================================================================================================
# child: one measurement against the database named by the environment
# ==================================================================================================


def log(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import bench.workflows  # noqa: F401  (bench.noop)

    out: dict[str, Any]
    if args.child == "setup":
        make_users()
        started = time.perf_counter()
        create_waiting(args.pending, reviewer_group="reviewers")
        out = {"create_waiting_s": round(time.perf_counter() - started, 2)}
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what autovacuum (PostgreSQL) does after a bulk load; SQLite: sqlite_stat1
    elif args.child == "throughput":
        sweep_ms = sweep_cost()
        engine_ms = engine_cost()
        worker = Worker("approvals")
        try:
            worker.wait_started()
            warm_up()
            out = throughput(worker)
        finally:
            worker.kill()
        out["sweep_ms"] = sweep_ms
        out["engine_ms_per_step"] = engine_ms
    else:
        from django.contrib.auth.models import User

        out = inbox_timings(User.objects.get(username="bench-reviewer"), User.objects.get(username="bench-root"),
                            args.rounds)
    emit(out)


def make_users() -> tuple[Any, Any]:
    from django.contrib.auth.models import Group, User

    from runs.roles import ensure_roles

    ensure_roles()
    reviewer = User.objects.create_user("bench-reviewer", password="x")
    reviewer.groups.add(Group.objects.get(name="reviewers"))
    superuser = User.objects.create_superuser("bench-root", password="x")
    return reviewer, superuser


def throughput(worker: Worker, runs_n: int = 200, steps_n: int = 10) -> dict[str, Any]:
    """bench/engine.py's throughput measurement, plus the CPU the worker's processes spent per step
    (less sensitive than wall-clock time to other processes sharing the machine)."""
    from django.db.models import Max

    from durable import control
    from durable.models import Run

    time.sleep(0.5)
    cpu0 = worker.cpu_s()
    started = time.time()
    ids = [control.start("bench.noop", {"steps": steps_n}).pk for _ in range(runs_n)]
    wait_until(lambda: runs_finished(ids[0], ids[-1]), 300, "throughput runs", interval=0.05)
    cpu1 = worker.cpu_s()
    last = Run.objects.filter(pk__gte=ids[0], pk__lte=ids[-1]).aggregate(last=Max("finished_at"))["last"]
    elapsed = last.timestamp() - started
    cpu = sum(cpu1.get(pid, 0.0) - spent for pid, spent in cpu0.items())
    return {"seconds": round(elapsed, 3), "steps_per_s": round(runs_n * steps_n / elapsed, 1),
            "worker_cpu_ms_per_step": round(cpu / (runs_n * steps_n) * 1000, 4)}


def engine_cost(runs: int = 9, steps: int = 400) -> float:
    """Median ms per no-op step of runs driven in this process (executor.drive, no worker pool): the
    engine's own cost per checkpoint with this database's table sizes, far less noisy than the
    throughput of a worker pool on a machine shared with other work."""
    from durable import control, executor

    times = []
    for _ in range(runs):
        run = control.start("bench.noop", {"steps": steps})
        started = time.perf_counter()
        executor.drive(run.pk)
        times.append((time.perf_counter() - started) / steps * 1000)
    return round(statistics.median(times), 4)


def sweep_cost(calls: int = 200) -> float:
    """Median time of one pass of the sweeper (recovery and the approvals' expiry hook), which every
    worker runs every DURABLE["SWEEP_SECONDS"]: the only worker code that looks at waiting runs."""
    from durable.recovery import sweep

    sweep()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        sweep()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 4)


def create_waiting(count: int, *, reviewer_group: str, batch: int = 2_000) -> None:
    """Runs parked as ctx.approval parks them: a completed step, the waiting approval step, a
    pending approval with its "requested" audit record. Spread over four tools and two workflows,
    over the last week."""
    import datetime as dt

    from django.db import transaction
    from django.utils import timezone

    from approvals.decisions import arguments_hash
    from approvals.models import Approval, AuditRecord
    from approvals.policies import ApprovalPolicy
    from approvals.workflows import REFUND_SCHEMA
    from durable.models import Event, Run, Status, Step, StepStatus

    now = timezone.now()
    policy = ApprovalPolicy(group=reviewer_group, expires_after=30 * 86400).as_dict()
    tools = ("refund", "send_email", "delete_account", "deploy")
    for offset in range(0, count, batch):
        size = min(batch, count - offset)
        with transaction.atomic():
            created = [now - dt.timedelta(seconds=(count - offset - i) * 60) for i in range(size)]
            runs = Run.objects.bulk_create([
                Run(workflow="demo.refund" if i % 2 else "agents.support", workflow_version="1",
                    status=Status.WAITING_APPROVAL, input={"order": f"A-{offset + i}", "amount": 10 + i % 500},
                    next_seq=1, event_seq=2, lease_epoch=1, claims=1, started_at=created[i], created_at=created[i])
                for i in range(size)
            ])
            Step.objects.bulk_create([
                step for i, run in enumerate(runs) for step in (
                    Step(run=run, seq=0, name="look_up_order", kind="step", status=StepStatus.COMPLETED,
                         input={"args": [run.input["order"]]}, output={"id": run.input["order"], "total": 99},
                         epoch=1, worker="bench:1", started_at=created[i], finished_at=created[i]),
                    Step(run=run, seq=1, name="approval:refund", kind="approval", status=StepStatus.WAITING,
                         input={"tool": "refund"}, epoch=1, worker="bench:1", started_at=created[i]),
                )
            ])
            Event.objects.bulk_create([
                event for run in runs for event in (
                    Event(run=run, seq=1, type="run.created", data={"workflow": run.workflow}),
                    Event(run=run, seq=2, type="run.waiting", data={"seq": 1, "kind": "approval"}),
                )
            ])
            approvals = []
            for i, run in enumerate(runs):
                tool = tools[(offset + i) % len(tools)]
                args = {"order": run.input["order"], "amount": run.input["amount"], "currency": "EUR",
                        "note": "bench"}
                approvals.append(Approval(
                    run=run, seq=1, tool=tool, arguments=args, arguments_hash=arguments_hash(run.pk, 1, tool, args),
                    schema=REFUND_SCHEMA, summary=f"{tool} for order {args['order']}", policy=policy,
                    group=reviewer_group, created_at=created[i], expires_at=created[i] + dt.timedelta(days=30),
                ))
            approvals = Approval.objects.bulk_create(approvals)
            AuditRecord.objects.bulk_create([
                AuditRecord(approval=a, action="requested", data={"tool": a.tool, "group": a.group},
                            created_at=a.created_at) for a in approvals
            ])


def inbox_timings(reviewer: Any, superuser: Any, rounds: int, samples: int = 15) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client

    from approvals.models import Approval

    client = Client()
    client.force_login(reviewer)
    admin = Client()
    admin.force_login(superuser)
    newest = Approval.objects.order_by("-created_at", "-id").first()
    assert newest is not None
    first = client.get("/approvals/")
    assert first.status_code == 200 and b"approval-card" in first.content, first.status_code
    cursor = first.content.decode().split("cursor=")[1].split('"')[0]
    pages: dict[str, tuple[Client, str, dict[str, str]]] = {
        "first_page": (client, "/approvals/", {}),
        "first_page_superuser": (admin, "/approvals/", {}),
        "next_page_htmx": (client, f"/approvals/?cursor={cursor}", {"HTTP_HX_REQUEST": "true"}),
        "filtered_tool_oldest": (client, "/approvals/?tool=deploy&sort=asc", {}),
        "detail": (client, f"/approvals/{newest.pk}/", {}),
        "history": (client, "/approvals/history/", {}),
        "api_list": (client, "/api/approvals?limit=50", {}),
    }
    results: dict[str, Any] = {}
    for name, (who, path, headers) in pages.items():
        medians = []
        for _ in range(rounds):
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                response = who.get(path, **headers)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (name, response.status_code)
            medians.append(round(statistics.median(times), 2))
        queries: list[str] = []

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            who.get(path, **headers)
        results[f"{name}_ms"] = statistics.median(medians)
        results[f"{name}_queries"] = len(queries)
        results.setdefault("rounds", {})[name] = medians
    results["what"] = (f"server time of GET through Django's test client (middleware, session, views, templates) as "
                       f"a reviewer of the group holding all {Approval.objects.filter(status='pending').count():,} "
                       f"pending approvals; median of {samples} requests per round, median of the rounds")
    return results


if __name__ == "__main__":
    main()
