"""FI-04 for a non-idempotent effect: SIGKILL after an at-most-once step's effect happened and before
its outcome was recorded. The new worker does not run it again; the run stops as `outcome_unknown`
until a person says whether it happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable import control
from durable.models import Event, Status, Step, StepStatus
from tests.chaos import chaos_workflows  # noqa: F401  (this process starts their runs)
from tests.chaos.harness import WorkerPool, seq_counts, wait_status, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def test_it_stops_for_a_person_instead_of_repeating_a_cut_off_at_most_once_step(
    workers: WorkerPool, effects: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    first = workers.start(test_workflows=True)
    run = control.start("chaos.charge", {"effects": str(effects), "hold": str(hold)})
    wait_until(lambda: seq_counts(effects, run.pk).get(1) == 1, 15, "the charge to happen")
    first.kill()  # after the effect, before its outcome is recorded

    second = workers.start(test_workflows=True)
    run = wait_status(run.pk, Status.OUTCOME_UNKNOWN, timeout=15)
    step = Step.objects.get(run=run, seq=1)
    assert (step.status, step.attempts) == (StepStatus.STARTED, 1)
    assert first.did(step.worker)
    assert seq_counts(effects, run.pk) == {0: 1, 1: 1}  # the new worker did not charge again
    assert Event.objects.filter(run=run, type="step.outcome_unknown", data__seq=1).exists()

    hold.unlink()
    # A person checked the payment provider: it happened, and this is its result.
    assert control.resolve(run.pk, 1, happened=True, output=f"{run.pk}:1") == Status.QUEUED
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=15)
    assert run.output == [f"{run.pk}:0", f"{run.pk}:1", f"{run.pk}:2"]
    assert seq_counts(effects, run.pk) == {0: 1, 1: 1, 2: 1}
    assert second.did(Step.objects.get(run=run, seq=2).worker)
