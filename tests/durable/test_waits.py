"""Durable waits: timers, external events, child runs. A waiting run holds no worker, no lease."""

from datetime import timedelta

import pytest
from django.utils import timezone

from durable import NO_RETRY, control
from durable.models import Run, Status, StepStatus
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, event_types, make_due

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


@pytest.fixture
def napper(define, calls):
    @define("waits.nap")
    def wf(ctx, input):
        ctx.sleep(3600)
        return ctx.step(lambda: calls.update(["after"]) or "rested", name="after")

    return "waits.nap"


def test_it_parks_a_sleeping_run_as_waiting_until_the_wake_time(napper):
    run = drain(control.start(napper).pk)

    assert run.status == Status.WAITING
    assert (
        timezone.now() + timedelta(minutes=59)
        < run.wake_at
        < timezone.now() + timedelta(minutes=61)
    )
    step = run.steps.get(seq=0)
    assert (step.kind, step.status) == ("sleep", StepStatus.WAITING)


def test_it_holds_no_lease_while_sleeping(napper):
    run = drain(control.start(napper).pk)

    assert run.lease_owner == ""
    assert run.lease_expires_at is None


def test_it_leaves_a_sleeping_run_alone_until_it_is_due(napper, calls):
    run = drain(control.start(napper).pk)

    assert sweep().woken == 0
    assert Run.objects.get(pk=run.pk).status == Status.WAITING
    assert calls == {}


def test_it_wakes_a_sleeping_run_when_it_is_due(napper, calls):
    run = drain(control.start(napper).pk)
    make_due(run.pk)

    assert sweep().woken == 1
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == "rested"
    assert calls == {"after": 1}
    assert run.steps.get(seq=0).status == StepStatus.COMPLETED


def test_it_does_not_finish_a_sleep_early_when_woken_before_its_time(napper, calls):
    run = drain(control.start(napper).pk)
    control.send_event(run.pk, "unrelated")  # wakes any waiting run

    run = drain(run.pk)
    assert run.status == Status.WAITING
    assert calls == {}


@pytest.fixture
def approval(define):
    @define("waits.approval")
    def wf(ctx, input):
        return {"answer": ctx.wait_event("approved", timeout=600)}

    return "waits.approval"


def test_it_receives_event_data_sent_before_the_wait_starts(approval):
    run = control.start(approval)
    control.send_event(run.pk, "approved", {"by": "ann"})

    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == {"answer": {"by": "ann"}}


def test_it_receives_event_data_sent_while_the_run_waits(approval):
    run = drain(control.start(approval).pk)
    assert run.status == Status.WAITING
    assert run.lease_owner == ""

    control.send_event(run.pk, "approved", {"by": "bob"})
    assert Run.objects.get(pk=run.pk).status == Status.QUEUED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == {"answer": {"by": "bob"}}


def test_it_ignores_events_of_another_name(approval):
    run = drain(control.start(approval).pk)
    control.send_event(run.pk, "rejected", {"by": "bob"})

    assert drain(run.pk).status == Status.WAITING


def test_it_returns_none_when_the_event_wait_times_out(approval):
    run = drain(control.start(approval).pk)
    make_due(run.pk)

    assert sweep().woken == 1
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == {"answer": None}


def test_it_consumes_each_event_once(define):
    @define("waits.twice")
    def wf(ctx, input):
        return [ctx.wait_event("tick"), ctx.wait_event("tick", timeout=0)]

    run = control.start("waits.twice")
    control.send_event(run.pk, "tick", 1)

    run = drain(run.pk)
    assert run.output == [1, None]


@pytest.fixture
def family(define):
    @define("waits.child")
    def child(ctx, input):
        if input.get("fail"):
            ctx.step(lambda: 1 / 0, name="divide", retry=NO_RETRY)
        return {"doubled": input["n"] * 2}

    @define("waits.parent")
    def parent(ctx, input):
        return {"child": ctx.child("waits.child", input)}

    return "waits.parent"


def test_it_starts_a_child_run_linked_to_its_parent(family):
    run = drain(control.start(family, {"n": 21}).pk)

    kid = Run.objects.get(parent=run)
    assert (kid.workflow, kid.input, kid.parent_seq) == ("waits.child", {"n": 21}, 0)
    assert kid.status == Status.QUEUED
    assert run.status == Status.WAITING
    assert run.lease_owner == ""


def test_it_gives_the_parent_the_output_of_its_child(family):
    run = drain(control.start(family, {"n": 21}).pk)
    kid = Run.objects.get(parent=run)

    assert drain(kid.pk).status == Status.SUCCEEDED
    assert Run.objects.get(pk=run.pk).status == Status.QUEUED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == {"child": {"doubled": 42}}
    assert "run.woken" in event_types(run.pk)


def test_it_raises_step_failed_in_the_parent_when_the_child_fails(define, family):
    @define("waits.careful_parent")
    def careful(ctx, input):
        from durable.errors import StepFailed

        try:
            return ctx.child("waits.child", input)
        except StepFailed as exc:
            return {"child_failed": str(exc)}

    run = drain(control.start("waits.careful_parent", {"n": 1, "fail": True}).pk)
    kid = Run.objects.get(parent=run)
    assert drain(kid.pk).status == Status.FAILED

    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert "ZeroDivisionError" in run.output["child_failed"]


def test_it_fails_a_parent_that_does_not_catch_its_child_failing(family):
    run = drain(control.start(family, {"n": 1, "fail": True}).pk)
    drain(Run.objects.get(parent=run).pk)

    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert "StepFailed" in run.error
