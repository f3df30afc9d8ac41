"""Agent benchmark: the cost of an agent turn (one model call + one tool call, each a checkpointed
step) with a scripted model, and how it grows over a 200-turn conversation.

    cd /work/main && .venv/bin/python bench/agents.py [--db sqlite|postgres|both] [--rounds 3] [--turns 200]

Prints one JSON document and writes bench/results/agents-<db>.json per database. Each database is
fresh (a temporary SQLite file, or the PostgreSQL database `durable_bench_agents`, dropped and
created), migrated, then measured by a child process of this script that drives the run in-process.
The scripted model marks the time of every model call; a turn is the time from one model call to the
next. Each tool result is 1 KB, so by turn 200 the conversation behind a call is over 200 KB: a turn
must still cost what it cost at turn 10 (target: within 1.2x), because a model step journals only what
is new since the previous one. Figures are medians over the rounds.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, bench_env, child_json, emit, fresh_database  # noqa: E402
TARGET_RATIO = 1.2
TOOL_RESULT_BYTES = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 20:
        parser.error("--turns must be at least 20")
    if args.child:
        child(args)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for db in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        env, cleanup = prepare_database(db)
        try:
            report[db] = run_child(db, env, args)
        finally:
            cleanup()
        (RESULTS / f"agents-{db}.json").write_text(json.dumps(report[db], indent=2) + "\n")
    print(json.dumps(report, indent=2))


def prepare_database(db: str) -> tuple[dict[str, str], Any]:
    env = bench_env()
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(key, None)  # the demo agents stay scripted; nothing here calls a real model
    return env, fresh_database(db, "durable_bench_agents", env)


def run_child(db: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--db", db,
           "--rounds", str(args.rounds), "--turns", str(args.turns)]
    print(f"== {db}: {args.rounds} rounds of {args.turns} turns", file=sys.stderr, flush=True)
    return child_json(cmd, env, db)


# -- child: measurements against the database named by the environment ----------------------------------


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    marks = define_bench_agent(args.turns)
    rounds: list[dict[str, Any]] = []
    drive_agent(marks, 20)  # warm-up: imports, prepared statements, caches
    for number in range(args.rounds):
        print(f"   round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
        rounds.append({"agent": drive_agent(marks, args.turns), "noop_step_ms_mean": measure_noop_step(200),
                       "insert_commit_ms": measure_floor(200)})
    med = statistics.median
    early = med(r["agent"]["turn_10_ms"] for r in rounds)
    late = med(r["agent"]["turn_last_ms"] for r in rounds)
    ratio = round(late / early, 3)
    out = {
        "db": args.db,
        "vendor": connection.vendor,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rounds": args.rounds,
        "turns": args.turns,
        "turn_10_ms": early,
        f"turn_{args.turns}_ms": late,
        f"ratio_{args.turns}_vs_10": ratio,
        "target": {f"ratio_{args.turns}_vs_10": f"<= {TARGET_RATIO}", "ok": ratio <= TARGET_RATIO},
        "turn_median_ms": med(r["agent"]["turn_median_ms"] for r in rounds),
        "ms_per_step_median": round(med(r["agent"]["turn_median_ms"] for r in rounds) / 2, 4),
        "ms_per_step_mean": med(r["agent"]["ms_per_step_mean"] for r in rounds),
        "noop_step_ms_mean": med(r["noop_step_ms_mean"] for r in rounds),
        "insert_commit_ms": med(r["insert_commit_ms"] for r in rounds),
        "conversation_kb_at_last_turn": med(r["agent"]["conversation_kb"] for r in rounds),
        "what": (
            "a turn = one scripted model call (llm step) + one tool call (tool step returning 1 KB), driven "
            "in-process by executor.drive; turn_N_ms = median turn time over the 10 turns up to N (turn 1 "
            "left out); ms_per_step_median = median turn / 2; ms_per_step_mean = the whole drive (claim, "
            "201 model calls, 200 tool calls, finish) / steps, including rare slow commits; "
            "noop_step_ms_mean = the same for a run of 200 plain no-op ctx.step calls, and "
            "insert_commit_ms = one single-row INSERT + COMMIT, both measured in the same rounds for scale"
        ),
        "rounds_detail": rounds,
    }
    emit(out)


def define_bench_agent(turns: int) -> list[float]:
    from durable.agents import Agent, register
    from durable.providers import ModelRequest, scripted
    from durable.tools import tool

    marks: list[float] = []
    payload = "r" * (TOOL_RESULT_BYTES - 40)

    @tool
    def fetch(n: int) -> str:
        """Fetch record n (1 KB)."""
        return f"{n:08d} {payload}"

    def model(request: ModelRequest) -> dict[str, Any]:
        marks.append(time.perf_counter())
        limit = int(request.instructions.rsplit(" ", 1)[1])
        if request.turn > limit:
            return {"text": "done"}
        return {"tool_calls": [{"name": "fetch", "arguments": {"n": request.turn}}]}

    scripted.register("bench-turns", model)
    register(Agent("bench.agent", "scripted:bench-turns", f"Fetch records up to {turns}", tools=[fetch],
                   max_turns=turns + 1))
    return marks


def drive_agent(marks: list[float], turns: int) -> dict[str, float]:
    from durable import agents, control, executor, registry

    agent = agents.get("bench.agent")
    if agent.max_turns != turns + 1:  # the turn count is in the definition (and so in its version)
        definition = agents.Agent("bench.agent", agent.model, f"Fetch records up to {turns}", tools=agent.tools,
                                  max_turns=turns + 1)
        registry.unregister("bench.agent")
        agents.register(definition)
    marks.clear()
    run = control.start("bench.agent", {"message": "go"})
    started = time.perf_counter()
    outcome = executor.drive(run.pk)
    elapsed = time.perf_counter() - started
    if outcome != "succeeded":
        raise RuntimeError(f"bench.agent run {run.pk}: {outcome}")
    # marks[i] is the start of model call i+1; turn t (1-based) took marks[t] - marks[t-1]
    times = [(marks[i] - marks[i - 1]) * 1000 for i in range(1, len(marks))]
    sizes = run.steps.filter(kind="tool").count() * TOOL_RESULT_BYTES / 1024
    return {
        "turn_10_ms": round(statistics.median(times[1:11]), 4),
        "turn_last_ms": round(statistics.median(times[turns - 10:turns]), 4),
        "turn_median_ms": round(statistics.median(times), 4),
        "ms_per_step_mean": round(elapsed * 1000 / (2 * turns + 1), 4),
        "conversation_kb": round(sizes, 1),
    }


def measure_noop_step(steps: int) -> float:
    from durable import control, executor, registry

    if "bench.agents.noop" not in {w.name for w in registry.all_workflows()}:
        @registry.workflow("bench.agents.noop")
        def noop_steps(ctx: Any, input: Any) -> None:
            for _ in range(int(input["steps"])):
                ctx.step(lambda: None, name="noop")

    run = control.start("bench.agents.noop", {"steps": steps})
    started = time.perf_counter()
    executor.drive(run.pk)
    return round((time.perf_counter() - started) * 1000 / steps, 4)


def measure_floor(count: int) -> float:
    """One single-row INSERT + COMMIT through the same connection: the database's own floor."""
    from django.db import connection, transaction

    key = "bigserial PRIMARY KEY" if connection.vendor == "postgresql" else "integer PRIMARY KEY AUTOINCREMENT"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS bench_agents_floor (id {key}, v text NOT NULL)")
        started = time.perf_counter()
        for _ in range(count):
            with transaction.atomic():
                cursor.execute("INSERT INTO bench_agents_floor (v) VALUES (%s)", ["x"])
        elapsed = time.perf_counter() - started
        cursor.execute("DELETE FROM bench_agents_floor")
    return round(elapsed * 1000 / count, 4)


if __name__ == "__main__":
    main()
