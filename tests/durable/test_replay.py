"""Replay: recorded steps return their journal result and never run again; divergence fails."""

import uuid

import pytest

from durable import control, executor
from durable.models import Run, Status, Step
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, WorkerDied, dispatches, event_types, fake_crash

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


def test_it_does_not_run_completed_steps_again_on_a_later_slice(define, calls):
    @define("replay.two_slices")
    def wf(ctx, input):
        ctx.step(lambda: calls.update(["a"]), name="a")
        ctx.wait_event("go")
        ctx.step(lambda: calls.update(["b"]), name="b")

    run = control.start("replay.two_slices")
    assert drain(run.pk).status == Status.WAITING
    control.send_event(run.pk, "go")

    assert drain(run.pk).status == Status.SUCCEEDED
    assert calls == {"a": 1, "b": 1}


def test_it_does_not_run_completed_steps_again_after_a_worker_dies_mid_step(define, calls):
    @define("replay.crash")
    def wf(ctx, input):
        def b():
            calls.update(["b"])
            if calls["b"] == 1:
                raise WorkerDied()
            return "b"

        return [ctx.step(lambda: calls.update(["a"]) or "a", name="a"), ctx.step(b, name="b")]

    run = control.start("replay.crash")
    with pytest.raises(WorkerDied):
        executor.drive(run.pk)
    fake_crash(run.pk)
    assert sweep().recovered == 1

    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == ["a", "b"]
    assert calls == {"a": 1, "b": 2}


def test_it_resumes_after_a_faked_crash_without_running_recorded_steps(define, calls):
    @define("replay.faked_crash")
    def wf(ctx, input):
        ctx.step(lambda: calls.update(["a"]), name="a")
        ctx.wait_event("go")
        ctx.step(lambda: calls.update(["b"]), name="b")

    run = control.start("replay.faked_crash")
    drain(run.pk)
    fake_crash(run.pk)
    assert sweep().recovered == 1

    assert drain(run.pk).status == Status.WAITING
    control.send_event(run.pk, "go")
    assert drain(run.pk).status == Status.SUCCEEDED
    assert calls == {"a": 1, "b": 1}


def test_it_returns_the_recorded_result_on_replay(define):
    @define("replay.result")
    def wf(ctx, input):
        token = ctx.step(lambda: uuid.uuid4().hex, name="token")
        ctx.wait_event("go")
        return token

    run = control.start("replay.result")
    drain(run.pk)
    recorded = Step.objects.get(run=run, seq=0).output
    control.send_event(run.pk, "go")

    assert drain(run.pk).output == recorded


def test_it_gives_the_workflow_the_same_value_on_first_run_and_on_replay(define):
    seen = []

    @define("replay.same_value")
    def wf(ctx, input):
        seen.append(ctx.step(lambda: {"pair": (1, 2), 7: "seven"}, name="shaped"))
        ctx.wait_event("go")

    run = control.start("replay.same_value")
    drain(run.pk)
    control.send_event(run.pk, "go")
    drain(run.pk)

    assert seen == [{"pair": [1, 2], "7": "seven"}] * 2


def test_it_yields_and_dispatches_again_when_the_slice_budget_is_spent(
    define, calls, durable_settings
):
    durable_settings(SLICE_SECONDS=0)

    @define("replay.slices")
    def wf(ctx, input):
        for name in ("a", "b", "c"):
            ctx.step(lambda name=name: calls.update([name]), name=name)

    run = control.start("replay.slices")
    queued_before = dispatches()
    executor.drive(run.pk)

    run.refresh_from_db()
    assert run.status == Status.QUEUED
    assert run.lease_owner == ""
    assert run.steps.count() == 1
    assert dispatches() == queued_before + 1
    assert event_types(run.pk)[-1] == "run.yielded"


def test_it_finishes_a_run_that_yields_every_slice_without_running_a_step_twice(
    define, calls, durable_settings
):
    durable_settings(SLICE_SECONDS=0)

    @define("replay.many_slices")
    def wf(ctx, input):
        for name in ("a", "b", "c"):
            ctx.step(lambda name=name: calls.update([name]), name=name)

    run = drain(control.start("replay.many_slices").pk)

    assert run.status == Status.SUCCEEDED
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert run.claims == 3


def test_it_fails_the_run_when_replay_asks_for_another_step_name(define, calls):
    @define("replay.renamed")
    def v1(ctx, input):
        ctx.step(lambda: "a", name="load_customer")
        ctx.wait_event("go")

    run = control.start("replay.renamed")
    drain(run.pk)

    @define("replay.renamed")
    def v2(ctx, input):
        ctx.step(lambda: calls.update(["renamed"]), name="load_account")
        ctx.wait_event("go")

    control.send_event(run.pk, "go")
    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert run.error.startswith("NonDeterminism")
    assert "'load_account'" in run.error and "'load_customer'" in run.error
    assert calls["renamed"] == 0


def test_it_fails_the_run_when_replay_asks_for_another_kind_of_step(define):
    @define("replay.rekinded")
    def v1(ctx, input):
        ctx.step(lambda: "a", name="nap")
        ctx.wait_event("go")

    run = control.start("replay.rekinded")
    drain(run.pk)

    @define("replay.rekinded")
    def v2(ctx, input):
        ctx.sleep(0, name="nap")
        ctx.wait_event("go")

    control.send_event(run.pk, "go")
    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert "sleep 'nap'" in run.error and "step 'nap'" in run.error


def test_it_fails_the_run_when_the_workflow_returns_with_journal_entries_left_over(define):
    @define("replay.shortened")
    def v1(ctx, input):
        ctx.step(lambda: "a", name="first")
        ctx.step(lambda: "b", name="second")
        ctx.wait_event("go")

    run = control.start("replay.shortened")
    drain(run.pk)

    @define("replay.shortened")
    def v2(ctx, input):
        return ctx.step(lambda: "a", name="first")

    control.send_event(run.pk, "go")
    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert run.error.startswith("NonDeterminism")
    assert "'second'" in run.error
    assert Run.objects.get(pk=run.pk).output is None
