"""Fencing: once another claim (or a control) raised the epoch, the old holder can write nothing."""

import pytest
from django.db.models import F

from durable import control, executor, journal, registry
from durable.context import Context
from durable.errors import FencedOut
from durable.models import Run, Status
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, event_types, expire_lease, snapshot

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


@pytest.fixture
def two_steps(define, calls):
    @define("fencing.two")
    def wf(ctx, input):
        return [ctx.step(lambda n=n: calls.update([n]) or n, name=n) for n in ("a", "b")]

    return "fencing.two"


def stale_and_live(run_id):
    """A worker whose lease lapsed (stale), and the worker that took the run over after a sweep."""
    stale = executor.claim(run_id)
    expire_lease(run_id)
    sweep()
    live = executor.claim(run_id)
    assert live.epoch > stale.epoch
    return stale, live


def context_for(lease):
    return Context(lease, registry.get(lease.workflow), journal.load_journal(lease.run_id))


def test_it_refuses_the_checkpoint_of_a_step_whose_worker_lost_the_run_mid_step(define, calls):
    @define("fencing.mid_step")
    def wf(ctx, input):
        def a():
            calls.update(["a"])
            Run.objects.filter(pk=ctx.run_id).update(
                lease_epoch=F("lease_epoch") + 1
            )  # another claim
            return "a"

        ctx.step(a, name="a")
        ctx.step(lambda: calls.update(["b"]), name="b")

    run = control.start("fencing.mid_step")

    assert executor.drive(run.pk) == "fenced out"
    run = Run.objects.get(pk=run.pk)
    assert run.steps.count() == 0
    assert calls == {"a": 1}
    assert "step.completed" not in event_types(run.pk)
    assert run.status == Status.RUNNING  # the new owner's, untouched


def test_it_refuses_a_step_checkpoint_from_a_stale_lease(two_steps, calls):
    run = control.start(two_steps)
    stale, _ = stale_and_live(run.pk)
    before = snapshot()

    with pytest.raises(FencedOut):
        context_for(stale).step(lambda: "zombie", name="a")
    assert snapshot() == before


def test_it_refuses_the_outcome_of_a_stale_lease(two_steps):
    run = control.start(two_steps)
    stale, _ = stale_and_live(run.pk)
    before = snapshot()

    with pytest.raises(FencedOut):
        executor.finish(stale, Status.SUCCEEDED, output_json='"zombie"')
    assert snapshot() == before


def test_it_refuses_a_stale_lease_parking_the_run(define):
    @define("fencing.sleeper")
    def wf(ctx, input):
        ctx.sleep(60)

    run = control.start("fencing.sleeper")
    stale, _ = stale_and_live(run.pk)
    before = snapshot()

    with pytest.raises(FencedOut):
        context_for(stale).sleep(60)
    assert snapshot() == before


def test_it_marks_the_lease_lost_when_the_heartbeat_is_refused(two_steps):
    run = control.start(two_steps)
    stale, live = stale_and_live(run.pk)

    executor.heartbeat.beat(stale)
    executor.heartbeat.beat(live)
    assert stale.lost is True
    assert live.lost is False


def test_it_runs_no_further_step_body_once_the_lease_is_known_lost(two_steps, calls):
    run = control.start(two_steps)
    stale, _ = stale_and_live(run.pk)
    executor.heartbeat.beat(stale)

    with pytest.raises(FencedOut):
        context_for(stale).step(lambda: calls.update(["zombie"]), name="a")
    assert calls == {}


def test_it_lets_the_new_owner_finish_after_fencing_out_the_old_one(two_steps, calls):
    run = control.start(two_steps)
    stale, live = stale_and_live(run.pk)
    with pytest.raises(FencedOut):
        context_for(stale).step(lambda: calls.update(["zombie"]), name="a")

    assert executor.execute(live) == "succeeded"
    run = Run.objects.get(pk=run.pk)
    assert run.output == ["a", "b"]
    assert set(run.steps.values_list("epoch", flat=True)) == {live.epoch}


def test_it_never_lets_a_cancelled_run_finish(two_steps):
    run = control.start(two_steps)
    lease = executor.claim(run.pk)
    control.cancel(run.pk)

    with pytest.raises(FencedOut):
        executor.finish(lease, Status.SUCCEEDED, output_json="1")
    assert drain(run.pk).status == Status.CANCELLED
