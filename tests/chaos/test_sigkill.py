"""SIGKILL a worker's whole process tree while a step of `demo.analysis` runs: another worker finishes
the run, every completed step's body ran exactly once, and the takeover time is measured.

The takeover time is from the kill to the new worker's checkpoint of the step that was cut short
(also recorded: to its claim, and to that step starting). Samples go to var/chaos/takeover.json.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from durable import control
from durable.models import Event, Run, Status, Step, StepStatus
from tests.chaos.conftest import TAKEOVERS
from tests.chaos.harness import (
    Worker,
    WorkerPool,
    record_takeover,
    seq_counts,
    wait_status,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

CHUNKS = 20
STEP_MS = 200


def start_analysis(effects: Path) -> Run:
    return control.start(
        "demo.analysis", {"chunks": CHUNKS, "step_ms": STEP_MS, "effects_file": str(effects)}
    )


def kill_owner_mid_step(
    pool: WorkerPool, run_id: int, checkpointed: int
) -> tuple[Worker, float, int]:
    """Once `checkpointed` steps are recorded, SIGKILL the tree of the worker holding the run while
    its next step runs. Returns the victim, the time of the kill and the seq of the step cut short."""
    run = wait_until(
        lambda: Run.objects.filter(
            pk=run_id, status=Status.RUNNING, next_seq__gte=checkpointed
        ).first(),
        30,
        f"{checkpointed} steps of run {run_id} checkpointed",
        interval=0.01,
    )
    victim = pool.owner(run.lease_owner)
    killed_at = victim.kill()
    cut = Run.objects.values_list("next_seq", flat=True).get(
        pk=run_id
    )  # no checkpoint can follow the kill
    assert cut < CHUNKS, "the run reached its last step before the kill; nothing was cut short"
    return victim, killed_at, cut


def measure_takeover(run_id: int, cut: int, killed_at: float, variant: str) -> dict[str, Any]:
    """Wait for the step cut short to be checkpointed again; record how long after the kill."""
    step = wait_until(
        lambda: Step.objects.filter(run_id=run_id, seq=cut).first(), 30, f"step {cut} re-run"
    )
    claim = Event.objects.get(run_id=run_id, type="run.claimed", data__epoch=step.epoch)
    sample = {
        "db": connection.vendor,
        "variant": variant,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cut_step": cut,
        "to_claim_s": round(claim.created_at.timestamp() - killed_at, 3),
        "to_step_start_s": round(step.started_at.timestamp() - killed_at, 3),
        "takeover_s": round(step.finished_at.timestamp() - killed_at, 3),
    }
    summary = record_takeover(sample)
    sample = {**sample, "worker": step.worker}
    TAKEOVERS.append(sample)
    print(f"takeover sample: {sample}\nmedians so far: {summary}")
    return sample


def assert_ran_exactly_once(run: Run, effects: Path, cut_short: set[int]) -> None:
    """Each chunk's effect happened once; only a step cut short by a kill may have happened twice."""
    counts = seq_counts(effects, run.pk)
    assert sorted(counts) == list(range(CHUNKS)), (
        f"missing effects: {sorted(set(range(CHUNKS)) - set(counts))}"
    )
    repeated = {seq: n for seq, n in counts.items() if n > 1}
    assert all(seq in cut_short and n == 2 for seq, n in repeated.items()), (
        f"step bodies re-run: {repeated} (only a step cut short, {sorted(cut_short)}, may run twice)"
    )
    steps = list(
        Step.objects.filter(run=run).order_by("seq").values_list("seq", "status", "attempts")
    )
    assert steps == [(seq, StepStatus.COMPLETED, 1) for seq in range(CHUNKS + 1)]


def assert_done_by(run: Run, spans: list[tuple[int, Worker]]) -> None:
    """Step.worker names the worker that ran each step: spans of (first seq, worker)."""
    for step in Step.objects.filter(run=run).order_by("seq"):
        _first_seq, worker = max(
            (span for span in spans if span[0] <= step.seq), key=lambda span: span[0]
        )
        assert worker.did(step.worker), (
            f"step {step.seq} by {step.worker}, expected worker {worker.name}"
        )


def test_it_finishes_the_run_on_a_worker_started_after_the_kill(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start()
    run = start_analysis(effects)

    victim, killed_at, cut = kill_owner_mid_step(workers, run.pk, 5)
    assert victim is first
    second = workers.start()

    run = wait_status(run.pk, Status.SUCCEEDED, timeout=60)
    sample = measure_takeover(run.pk, cut, killed_at, "cold")
    assert second.did(sample["worker"])
    assert run.output["chunks"] == CHUNKS
    assert (run.claims, run.recoveries) == (2, 1)
    assert_ran_exactly_once(run, effects, cut_short={cut})
    assert_done_by(run, [(0, first), (cut, second)])


def test_it_hands_a_killed_workers_run_to_a_worker_already_running(
    workers: WorkerPool, effects: Path
) -> None:
    """Pure takeover, twice in one run: each time live workers are waiting when the owner dies.
    (All three start before the run: a worker started mid-run may not be up before it ends.)"""
    trio = [workers.start(), workers.start(), workers.start()]
    run = start_analysis(effects)

    victim, killed_at, cut = kill_owner_mid_step(workers, run.pk, 5)
    survivor = workers.owner(measure_takeover(run.pk, cut, killed_at, "warm")["worker"])
    assert survivor in trio and survivor is not victim

    victim2, killed_at2, cut2 = kill_owner_mid_step(workers, run.pk, cut + 5)
    assert victim2 is survivor
    last = workers.owner(measure_takeover(run.pk, cut2, killed_at2, "warm")["worker"])
    assert last in trio and last not in (victim, victim2)

    run = wait_status(run.pk, Status.SUCCEEDED, timeout=60)
    assert (run.claims, run.recoveries) == (3, 2)
    assert_ran_exactly_once(run, effects, cut_short={cut, cut2})
    assert_done_by(run, [(0, victim), (cut, survivor), (cut2, last)])
    # Fencing: every step carries the epoch of the claim that ran it, and epochs only grow.
    epochs = list(Step.objects.filter(run=run).order_by("seq").values_list("epoch", flat=True))
    assert epochs == sorted(epochs) and len(set(epochs)) == 3


def test_it_recovers_runs_a_killed_worker_had_taken_from_the_queue_but_not_started(
    workers: WorkerPool,
) -> None:
    """django-q2 prefetches: a busy worker's pusher takes queued tasks (locking them for `retry`, two
    hours) before it has a free process. If it dies, those runs are still `queued` and no other worker
    gets their task. The sweeper that sees the dead worker's lease expire dispatches them again at
    once (not only after DURABLE_REDISPATCH_AFTER_SECONDS, 30 s), so they are seconds late, not lost."""
    first = workers.start()
    runs = [control.start("demo.analysis", {"chunks": 8, "step_ms": 250}) for _ in range(4)]
    ids = [run.pk for run in runs]
    wait_until(
        lambda: Run.objects.filter(status=Status.RUNNING).count() == 2, 15, "two runs running"
    )
    wait_until(
        lambda: not OrmQ.objects.filter(lock__lte=timezone.now()).exists(),
        15,
        "the other two prefetched",
    )
    first.kill()
    # what the dead worker left: runs it was driving, and runs whose task it held but never started
    driven = set(Run.objects.filter(pk__in=ids, status=Status.RUNNING).values_list("pk", flat=True))
    prefetched = set(Run.objects.filter(pk__in=ids, status=Status.QUEUED).values_list("pk", flat=True))
    assert len(driven) == 2 and prefetched and not OrmQ.objects.filter(lock__lte=timezone.now()).exists()

    second = workers.start()
    for run in runs:
        # well inside the 30 s backstop: 4 runs of 2 s on 2 processes, after a takeover of about 2 s
        wait_status(run.pk, Status.SUCCEEDED, timeout=20)
    for run in Run.objects.filter(pk__in=driven):
        assert (run.claims, run.recoveries) == (2, 1)  # taken over after its lease expired
    for run in Run.objects.filter(pk__in=prefetched):
        assert (run.claims, run.recoveries) == (1, 0)  # dispatched again, then started from scratch
        assert all(second.did(step.worker) for step in run.steps.all())
