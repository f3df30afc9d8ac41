"""Chaos campaign: many rounds of real worker faults, each checked against the invariants.

    cd /work/main && .venv/bin/python bench/chaos.py [--db sqlite|postgres|both] [--rounds 20] [--seed 1]

Each round starts `demo.analysis` (12 chunks, each writing its idempotency key to an effects file)
on a pool of two live `durable worker` process trees, waits for a random number of checkpoints, and
then injects one fault into the worker holding the lease: SIGKILL of its whole process group (a
fresh worker replaces it) or SIGSTOP past the lease then SIGCONT (a zombie). The run must finish with
the fault-free output, and the oracle checks after every round:

- INV-1: no duplicated completed step (one row per seq, all completed);
- INV-2/INV-3: every step's effect happened, and only the step cut short by the fault twice;
- INV-8: epochs never go down along the journal, and after the fault only the new owner wrote;
- INV-10: the run finished within the deadline after the fault (liveness);
- INV-11: the output equals the fault-free reference.

Prints one JSON document (rounds, faults, violations, takeover times) and writes
bench/results/chaos-<db>.json. The fast proofs of each fault are in tests/chaos; this is the long,
randomised campaign kept out of `make test`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, bench_env, child_json, emit, fresh_database, measure_each_database  # noqa: E402

CHUNKS = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    def prepare(db: str) -> tuple[dict[str, str], Any]:
        env = bench_env(DURABLE_LOG_LEVEL="INFO")  # the harness waits for the worker's "started" line
        return env, fresh_database(db, "durable_bench_chaos", env)

    def measure(db: str, env: dict[str, str]) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--rounds", str(args.rounds),
               "--seed", str(args.seed)]
        print(f"== {db}: {args.rounds} rounds of faults", file=sys.stderr, flush=True)
        return child_json(cmd, env, db)

    measure_each_database("chaos", args.db, 0, prepare, measure)


def child(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from tests.chaos.harness import WorkerPool, freeze_outside_transaction

    rng = random.Random(args.seed)
    logs = Path(tempfile.mkdtemp(prefix="durable-chaos-"))
    pool = WorkerPool(logs)
    live = [pool.start(), pool.start()]
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(args.rounds):
            fault = rng.choice(["sigkill", "sigkill", "sigstop"])
            step_ms = rng.choice([60, 150, 300])
            kill_after = rng.randint(1, CHUNKS - 1)
            print(f"   round {number + 1}/{args.rounds}: {fault} after {kill_after} steps of {step_ms} ms",
                  file=sys.stderr, flush=True)
            result = one_round(pool, live, fault, step_ms, kill_after, logs / f"effects-{number}.txt",
                               freeze_outside_transaction)
            rounds.append(result)
    finally:
        pool.stop_all()
    takeovers = [r["takeover_s"] for r in rounds if r.get("takeover_s") is not None]
    violations = [f"round {i}: {v}" for i, r in enumerate(rounds) for v in r["violations"]]
    emit({
        "rounds": len(rounds),
        "faults": dict(Counter(r["fault"] for r in rounds)),
        "violations": violations,
        "ok": not violations,
        "fault_to_next_checkpoint_s": {
            "p50": round(statistics.median(takeovers), 3) if takeovers else None,
            "p95": round(sorted(takeovers)[max(0, int(len(takeovers) * 0.95) - 1)], 3) if takeovers else None,
            "max": round(max(takeovers), 3) if takeovers else None,
            "samples": [round(t, 3) for t in takeovers],
        },
        "twice_run_steps": sum(r["twice"] for r in rounds),
        "machine": {},
    })


def reference_output() -> Any:
    from durable.workflows import aggregate, analyse_chunk

    return aggregate([analyse_chunk(i, 0, None) for i in range(CHUNKS)])


def one_round(pool: Any, live: list[Any], fault: str, step_ms: int, kill_after: int, effects: Path,
              freeze: Any) -> dict[str, Any]:
    from durable import control
    from durable.models import Run, Status, Step
    from tests.chaos.harness import seq_counts, wait_until

    run = control.start("demo.analysis", {"chunks": CHUNKS, "step_ms": step_ms, "effects_file": str(effects)})
    wait_until(lambda: Step.objects.filter(run=run).count() >= kill_after, 60, f"{kill_after} checkpoints")
    owner_id = wait_until(lambda: Run.objects.filter(pk=run.pk).values_list("lease_owner", flat=True).first(),
                          30, "a lease holder")
    victim = pool.owner(owner_id)
    epoch_before = Run.objects.get(pk=run.pk).lease_epoch
    faulted_at = time.time()
    if fault == "sigkill":
        faulted_at = victim.kill()
        live.remove(victim)
        live.append(pool.start())
    else:
        freeze(victim)
        faulted_at = time.time()
        wait_until(lambda: Run.objects.get(pk=run.pk).lease_epoch > epoch_before, 30, "a takeover")
        victim.cont()
    violations: list[str] = []
    try:
        wait_until(lambda: Run.objects.get(pk=run.pk).status in (Status.SUCCEEDED, Status.FAILED, Status.DEAD),
                   60, "the run to finish")
    except AssertionError as exc:
        violations.append(f"INV-10: {exc}")
    final = Run.objects.get(pk=run.pk)
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    if final.status != Status.SUCCEEDED:
        violations.append(f"status {final.status}: {final.error[-300:]}")
    if [s.seq for s in steps] != list(range(CHUNKS + 1)) or any(s.status != "completed" for s in steps):
        violations.append(f"INV-1: journal {[(s.seq, s.status) for s in steps]}")
    counts = seq_counts(effects, run.pk)
    missing = [seq for seq in range(CHUNKS) if counts.get(seq, 0) < 1]
    twice = [seq for seq, n in counts.items() if n > 1]
    if missing:
        violations.append(f"INV-3: no effect for steps {missing}")
    if len(twice) > 1 or any(counts[seq] > 2 for seq in twice):
        violations.append(f"INV-2/3: effects repeated {dict(counts)}")
    epochs = [s.epoch for s in steps]
    if epochs != sorted(epochs):
        violations.append(f"INV-8: epochs go down along the journal {epochs}")
    if fault == "sigstop":
        late = [s.seq for s in steps if s.epoch <= epoch_before and s.finished_at and s.finished_at.timestamp() > faulted_at + 0.5
                and victim.did(s.worker)]
        if late:
            violations.append(f"INV-8: the frozen worker wrote steps {late} after the takeover")
    if final.status == Status.SUCCEEDED and final.output != reference_output():
        violations.append(f"INV-11: output {final.output} differs from the fault-free one")
    after = [s for s in steps if s.epoch > epoch_before and s.finished_at]
    takeover = min(s.finished_at.timestamp() for s in after) - faulted_at if after else None
    return {"fault": fault, "step_ms": step_ms, "kill_after": kill_after, "takeover_s": takeover,
            "twice": len(twice), "violations": violations}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
