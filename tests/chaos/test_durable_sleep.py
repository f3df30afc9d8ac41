"""A durable sleep holds no worker and no lease: the worker that started it can die, and a worker
started later wakes the run when the timer is due."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from durable import control
from durable.models import Event, Run, Status, Step, StepStatus
from tests.chaos import chaos_workflows  # noqa: F401  (this process starts their runs)
from tests.chaos.harness import WorkerPool, seq_counts, wait_status

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def test_it_wakes_a_sleeping_run_on_a_worker_started_after_the_sleeper_died(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start(test_workflows=True)
    run = control.start("chaos.sleeper", {"effects": str(effects), "seconds": 2})
    run = wait_status(run.pk, Status.WAITING, timeout=15)
    assert (run.lease_owner, run.lease_expires_at) == ("", None)
    sleep = Step.objects.get(run=run, kind="sleep")
    assert (sleep.status, sleep.wake_at) == (StepStatus.WAITING, run.wake_at)
    first.kill()
    assert (
        Run.objects.get(pk=run.pk).status == Status.WAITING
    )  # no worker owned it, so nothing to recover

    second = workers.start(test_workflows=True)
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=15)

    before, sleep, after = Step.objects.filter(run=run).order_by("seq")
    assert [s.status for s in (before, sleep, after)] == [StepStatus.COMPLETED] * 3
    assert first.did(before.worker) and second.did(after.worker)
    # (the completed sleep's row no longer holds its wake_at; the run.waiting event does)
    due = datetime.fromisoformat(Event.objects.get(run=run, type="run.waiting").data["until"])
    assert sleep.wake_at is None or sleep.wake_at == due
    assert Event.objects.get(run=run, type="run.woken").created_at >= due, (
        "the run woke before its timer was due"
    )
    assert after.started_at >= due
    assert seq_counts(effects, run.pk) == {0: 1, 2: 1}  # the step before the sleep ran once
