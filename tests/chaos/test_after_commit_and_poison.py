"""FI-06: SIGKILL right after a checkpoint commits, before django-q2 acknowledges the task; the task
is delivered again and finds the work done. FI-24: a step that kills its worker every time is
dead-lettered after DURABLE_MAX_RECOVERIES instead of crashing workers forever."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from durable import control
from durable.models import Event, Run, Status, Step, StepStatus
from tests.chaos import chaos_workflows  # noqa: F401  (this process starts their runs)
from tests.chaos.harness import WorkerPool, probe, seq_counts, wait_status, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def redeliver_unacknowledged() -> list[int]:
    """Expire the queue locks of the tasks a killed worker had taken and never acknowledged, so they
    are delivered again now rather than after django-q2's `retry` (two hours here)."""
    rows = list(OrmQ.objects.values_list("id", flat=True))
    OrmQ.objects.filter(id__in=rows).update(lock=timezone.now() - timedelta(seconds=1))
    return rows


def test_it_does_not_rerun_a_step_whose_checkpoint_committed_before_the_kill(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start(test_workflows=True, env={"CHAOS_KILL_AFTER_CHECKPOINT": "2"})
    run = control.start("demo.analysis", {"chunks": 6, "step_ms": 50, "effects_file": str(effects)})
    wait_until(lambda: not first.alive(), 15, "the worker to kill itself after checkpoint 2")
    run = Run.objects.get(pk=run.pk)
    assert (run.status, run.next_seq) == (Status.RUNNING, 3)
    assert first.did(run.lease_owner)

    second = workers.start()
    redelivered = redeliver_unacknowledged()
    assert redelivered, "the killed worker's task should still be in the queue, unacknowledged"
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=20)
    wait_until(
        lambda: not OrmQ.objects.filter(id__in=redelivered).exists(),
        15,
        "the redelivered task to be taken",
    )

    assert seq_counts(effects, run.pk) == {seq: 1 for seq in range(6)}, "a completed step ran again"
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    assert [(s.seq, s.status, s.attempts) for s in steps] == [
        (seq, StepStatus.COMPLETED, 1) for seq in range(7)
    ]
    for step in steps:
        assert (first if step.seq <= 2 else second).did(step.worker), step
    assert (
        run.claims == 2
    )  # the redelivered task claimed nothing: the run was running, or already done


def test_it_ignores_a_task_redelivered_after_its_run_finished(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start(test_workflows=True, env={"CHAOS_KILL_AFTER_FINISH": "1"})
    run = control.start("demo.analysis", {"chunks": 3, "step_ms": 10, "effects_file": str(effects)})
    wait_until(
        lambda: not first.alive(), 15, "the worker to kill itself after the run's outcome committed"
    )
    run = Run.objects.get(pk=run.pk)
    assert run.status == Status.SUCCEEDED
    finished = (
        run.claims,
        run.event_seq,
        run.lease_epoch,
        list(Step.objects.filter(run=run).values_list("pk", "status")),
    )

    workers.start()
    redelivered = redeliver_unacknowledged()
    assert redelivered
    wait_until(
        lambda: not OrmQ.objects.filter(id__in=redelivered).exists(),
        15,
        "the redelivered task to be taken",
    )

    run = Run.objects.get(pk=run.pk)
    assert run.status == Status.SUCCEEDED
    assert (
        run.claims,
        run.event_seq,
        run.lease_epoch,
        list(Step.objects.filter(run=run).values_list("pk", "status")),
    ) == finished
    assert seq_counts(effects, run.pk) == {0: 1, 1: 1, 2: 1}


def test_it_dead_letters_a_step_that_kills_its_worker_every_time(
    workers: WorkerPool, effects: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    worker = workers.start(test_workflows=True, env={"DURABLE_MAX_RECOVERIES": "2"})
    run = control.start("chaos.poison", {"effects": str(effects), "gate": str(gate)})
    run = wait_status(run.pk, Status.DEAD, timeout=30)

    assert (run.claims, run.recoveries, run.next_seq) == (2, 2, 1)
    assert seq_counts(effects, run.pk) == {
        0: 1,
        1: 2,
    }  # the poison ran once per claim; the step before it once
    dead = Event.objects.get(run=run, type="run.dead_lettered")
    assert dead.data["at_step"] == 1
    assert worker.alive()

    probe()  # the cluster survived two of its processes being killed, and the dead run stays dead
    run = Run.objects.get(pk=run.pk)
    assert (run.status, run.claims) == (Status.DEAD, 2)

    gate.touch()  # an operator fixes the cause and resumes the run
    assert control.resume(run.pk) == Status.QUEUED
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=15)
    assert run.output == [f"{run.pk}:0", f"{run.pk}:1"]
    assert seq_counts(effects, run.pk) == {0: 1, 1: 3}
