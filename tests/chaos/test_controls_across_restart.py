"""Pause, resume, cancel and retry hold across a worker restart: the run's state is in the database,
not in the worker that was driving it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction
from django_q.models import OrmQ

from durable import control
from durable.dispatch import dispatch
from durable.models import Event, Run, Status, Step, StepStatus
from tests.chaos import chaos_workflows  # noqa: F401  (this process starts their runs)
from tests.chaos.harness import WorkerPool, probe, seq_counts, wait_status, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def start_analysis(effects: Path, chunks: int) -> Run:
    return control.start(
        "demo.analysis", {"chunks": chunks, "step_ms": 200, "effects_file": str(effects)}
    )


def wait_checkpointed(run_id: int, steps: int) -> Run:
    return wait_until(
        lambda: Run.objects.filter(pk=run_id, status=Status.RUNNING, next_seq__gte=steps).first(),
        30,
        f"{steps} steps of run {run_id} checkpointed",
        interval=0.01,
    )


def journal(run: Run) -> list[tuple[object, ...]]:
    return list(
        Step.objects.filter(run=run)
        .order_by("seq")
        .values_list("seq", "status", "epoch", "worker", "finished_at")
    )


def redeliver(run_id: int) -> int:
    """Hand the run to the workers once more, as a duplicate django-q2 delivery would (FI-21).
    Returns the queue row, which disappears once a worker has taken and acknowledged the task."""
    with transaction.atomic():
        dispatch(run_id)
        return OrmQ.objects.order_by("-id").values_list("id", flat=True).first()


def test_it_resumes_a_paused_run_on_a_new_worker_without_rerunning_steps(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start()
    run = start_analysis(effects, chunks=8)
    wait_checkpointed(run.pk, 2)

    assert control.pause(run.pk) == Status.PAUSING
    run = wait_status(run.pk, Status.PAUSED, timeout=10)  # parked at the next step boundary
    assert (run.lease_owner, run.lease_expires_at) == ("", None)
    paused_at = run.next_seq
    before = journal(run)
    first.kill()

    second = workers.start()
    probe()  # the new worker is taking tasks, and leaves the paused run alone
    assert Run.objects.get(pk=run.pk).status == Status.PAUSED
    assert control.resume(run.pk) == Status.QUEUED
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=30)

    assert journal(run)[:paused_at] == before  # recorded steps untouched
    counts = seq_counts(effects, run.pk)
    assert counts == {seq: 1 for seq in range(8)}, f"a step body ran twice: {counts}"
    for step in Step.objects.filter(run=run):
        assert (first if step.seq < paused_at else second).did(step.worker), step


def test_it_parks_a_pausing_run_whose_worker_died_and_resumes_it_elsewhere(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start()
    run = control.start(
        "demo.analysis", {"chunks": 5, "step_ms": 400, "effects_file": str(effects)}
    )
    wait_checkpointed(run.pk, 1)

    assert control.pause(run.pk) == Status.PAUSING  # the worker would park at the next boundary...
    first.kill()  # ...but dies in the middle of the step
    cut = Run.objects.get(pk=run.pk).next_seq
    second = workers.start()
    run = wait_status(
        run.pk, Status.PAUSED, timeout=15
    )  # the sweeper parks it: nobody may claim it
    assert (run.claims, run.lease_owner) == (1, "")
    # parked by the new worker's sweeper (or, if the step beat the kill, by its own worker)
    parked_by = set(
        Event.objects.filter(run=run, type__in=["run.recovered", "run.paused"]).values_list(
            "type", flat=True
        )
    )
    assert parked_by in ({"run.recovered"}, {"run.paused"}), parked_by

    assert control.resume(run.pk) == Status.QUEUED
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=30)
    counts = seq_counts(effects, run.pk)
    assert sorted(counts) == list(range(5))
    assert all(n == 1 or (n == 2 and seq == cut) for seq, n in counts.items()), (
        counts
    )  # only the cut step twice
    assert all(second.did(s.worker) for s in Step.objects.filter(run=run, seq__gte=cut))


def test_it_keeps_a_cancelled_run_cancelled_across_a_restart(
    workers: WorkerPool, effects: Path
) -> None:
    first = workers.start()
    run = start_analysis(effects, chunks=10)
    wait_checkpointed(run.pk, 2)

    assert control.cancel(run.pk) == Status.CANCELLED
    cancelled = Event.objects.get(run=run, type="run.cancelled")
    at_cancel = journal(run)
    # The step in flight finishes its body, but its checkpoint is refused and nothing follows it.
    wait_until(
        lambda: f"run {run.pk}: lease lost" in first.log(),
        10,
        "the worker to have its checkpoint refused",
    )
    first.kill()

    workers.start()
    queued = redeliver(run.pk)  # a stale or duplicate task for the cancelled run
    probe()
    wait_until(
        lambda: not OrmQ.objects.filter(pk=queued).exists(), 15, "the duplicate task to be taken"
    )

    run = Run.objects.get(pk=run.pk)
    assert run.status == Status.CANCELLED
    assert journal(run) == at_cancel
    assert run.next_seq == len(at_cancel)
    after = list(
        Event.objects.filter(run=run, seq__gt=cancelled.seq).values_list("type", flat=True)
    )
    assert after == [], f"events after the cancel: {after}"
    # No step body started after the cancel: at most the one in flight ran past the last checkpoint.
    counts = seq_counts(effects, run.pk)
    assert set(counts) <= set(range(len(at_cancel) + 1)) and set(counts.values()) == {1}, counts


def test_it_retries_a_failed_run_on_a_new_worker(
    workers: WorkerPool, effects: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = workers.start(test_workflows=True)
    run = control.start("chaos.gated", {"effects": str(effects), "gate": str(gate)})
    run = wait_status(run.pk, Status.FAILED, timeout=15)
    assert "gate" in run.error and "closed" in run.error
    assert list(Step.objects.filter(run=run).order_by("seq").values_list("status", flat=True)) == [
        StepStatus.COMPLETED,
        StepStatus.FAILED,
    ]
    first.kill()

    second = workers.start(test_workflows=True)
    gate.touch()  # what the step needed is fixed
    assert control.retry(run.pk) == Status.QUEUED
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=15)

    assert run.output == [f"{run.pk}:0", f"{run.pk}:1"]
    assert seq_counts(effects, run.pk) == {
        0: 1,
        1: 2,
    }  # the failed step ran again; the first did not
    prepare, gated = Step.objects.filter(run=run).order_by("seq")
    assert first.did(prepare.worker) and second.did(gated.worker)
    assert gated.status == StepStatus.COMPLETED
