"""FI-19, the zombie: a worker frozen (SIGSTOP) mid-step for longer than its lease loses the run to
another worker; when it wakes (SIGCONT) its checkpoint is refused and it records nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable import control
from durable.models import Event, Run, Status, Step, StepStatus
from tests.chaos.harness import (
    WorkerPool,
    freeze_outside_transaction,
    seq_counts,
    wait_status,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

CHUNKS = 12


def test_it_refuses_the_checkpoint_of_a_worker_frozen_past_its_lease(
    workers: WorkerPool, effects: Path
) -> None:
    pair = [workers.start(), workers.start()]
    run = control.start(
        "demo.analysis", {"chunks": CHUNKS, "step_ms": 200, "effects_file": str(effects)}
    )
    run = wait_until(
        lambda: Run.objects.filter(pk=run.pk, status=Status.RUNNING, next_seq__gte=3).first(),
        30,
        "3 steps checkpointed",
        interval=0.01,
    )
    zombie = workers.owner(run.lease_owner)
    survivor = pair[1] if zombie is pair[0] else pair[0]

    freeze_outside_transaction(zombie)
    frozen = Run.objects.get(pk=run.pk)
    cut, old_epoch = frozen.next_seq, frozen.lease_epoch
    assert frozen.status == Status.RUNNING and zombie.did(frozen.lease_owner)

    # The survivor's sweeper sees the lease expire and raises the fence; the survivor claims the run
    # and checkpoints the step the zombie was running, all while the zombie is frozen.
    taken = wait_until(
        lambda: (
            Run.objects.filter(pk=run.pk, lease_epoch__gt=old_epoch + 1)
            .exclude(lease_owner="")
            .first()
        ),
        15,
        "the survivor to claim the run",
    )
    new_epoch = taken.lease_epoch
    assert survivor.did(taken.lease_owner)
    assert Event.objects.filter(run=run, type="run.recovered", data__epoch=old_epoch).exists()
    wait_until(
        lambda: Step.objects.filter(run=run, seq=cut).exists(),
        15,
        f"the survivor to checkpoint step {cut}",
    )
    assert zombie.refresh(), "the zombie is still there, frozen"

    zombie.cont()
    wait_until(
        lambda: f"run {run.pk}: lease lost" in zombie.log(),
        15,
        "the zombie to find out it lost its lease",
    )
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=30)

    steps = list(Step.objects.filter(run=run).order_by("seq"))
    assert [s.seq for s in steps] == list(range(CHUNKS + 1))
    assert all(s.status == StepStatus.COMPLETED for s in steps)
    for step in steps:
        if step.seq < cut:
            assert zombie.did(step.worker) and step.epoch == old_epoch, step
        else:  # nothing from the zombie after the takeover; everything under the new fence
            assert not zombie.did(step.worker), f"step {step.seq} recorded by the zombie"
            assert survivor.did(step.worker) and step.epoch == new_epoch, step
    # The zombie finished the body of the step it was frozen in (an external effect cannot be fenced;
    # the idempotency key lets the sink deduplicate it), then started nothing else.
    counts = seq_counts(effects, run.pk)
    assert sorted(counts) == list(range(CHUNKS))
    assert {seq: n for seq, n in counts.items() if n > 1} in ({}, {cut: 2})
    assert (run.claims, run.recoveries) == (2, 1)
