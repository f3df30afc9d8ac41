"""Controls: start, pause, resume, cancel, retry, send_event: what each applies to and records."""

import pytest

from durable import NO_RETRY, RetryPolicy, control, executor
from durable.errors import IdempotencyConflict, InvalidTransition
from durable.models import Event, Run, Signal, Status
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, event_types, events_of, run_row, snapshot

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


@pytest.fixture
def two_steps(define, calls):
    """`two_steps(name, during_first=fn)`: a workflow of steps a then b; `fn(ctx)` runs inside a."""

    def make(name, during_first=lambda ctx: None):
        @define(name)
        def wf(ctx, input):
            def a():
                calls.update(["a"])
                during_first(ctx)
                return "a"

            return [ctx.step(a, name="a"), ctx.step(lambda: calls.update(["b"]) or "b", name="b")]

        return name

    return make


def test_it_returns_the_same_run_when_started_twice_with_one_idempotency_key(define):
    @define("controls.idem")
    def wf(ctx, input):
        return input

    first = control.start("controls.idem", {"order": 7}, idempotency_key="order-7")
    second = control.start("controls.idem", {"order": 7}, idempotency_key="order-7")

    assert second.pk == first.pk
    assert Run.objects.count() == 1


def test_it_refuses_an_idempotency_key_reused_with_another_input(define):
    @define("controls.idem_conflict")
    def wf(ctx, input):
        return input

    control.start("controls.idem_conflict", {"order": 7}, idempotency_key="order-7")
    before = snapshot()

    with pytest.raises(IdempotencyConflict):
        control.start("controls.idem_conflict", {"order": 8}, idempotency_key="order-7")
    assert snapshot() == before


def test_it_pauses_a_queued_run_at_once(two_steps):
    run = control.start(two_steps("controls.pause_queued"))

    assert control.pause(run.pk) == Status.PAUSED
    assert drain(run.pk).status == Status.PAUSED
    assert executor.drive(run.pk) == "not claimed"


def test_it_pauses_a_waiting_run_at_once(define):
    @define("controls.pause_waiting")
    def wf(ctx, input):
        return ctx.wait_event("go")

    run = control.start("controls.pause_waiting")
    drain(run.pk)

    assert control.pause(run.pk) == Status.PAUSED
    assert Run.objects.get(pk=run.pk).status == Status.PAUSED


def test_it_marks_a_running_run_as_pausing_until_the_step_boundary(two_steps):
    seen = []

    def pause_now(ctx):
        seen.append(control.pause(ctx.run_id))
        seen.append(Run.objects.get(pk=ctx.run_id).status)

    run = control.start(two_steps("controls.pausing", during_first=pause_now))
    drain(run.pk)

    assert seen == [Status.PAUSING, Status.PAUSING]


def test_it_parks_a_pausing_run_as_paused_at_the_next_step_boundary(two_steps, calls):
    run = control.start(
        two_steps("controls.paused", during_first=lambda ctx: control.pause(ctx.run_id))
    )

    run = drain(run.pk)
    assert run.status == Status.PAUSED
    assert run.lease_owner == ""
    assert list(run.steps.values_list("name", flat=True)) == ["a"]
    assert calls == {"a": 1}
    assert event_types(run.pk)[-1] == "run.paused"


def test_it_resumes_a_paused_run_from_where_it_stopped(two_steps, calls):
    run = control.start(
        two_steps("controls.resume", during_first=lambda ctx: control.pause(ctx.run_id))
    )
    drain(run.pk)

    assert control.resume(run.pk) == Status.QUEUED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == ["a", "b"]
    assert calls == {"a": 1, "b": 1}


def test_it_withdraws_a_pending_pause_when_resumed(two_steps):
    run = control.start(two_steps("controls.withdraw"))
    executor.claim(run.pk)
    control.pause(run.pk)

    assert control.resume(run.pk) == Status.RUNNING
    assert Run.objects.get(pk=run.pk).status == Status.RUNNING


def test_it_keeps_running_when_the_pause_is_withdrawn_before_the_next_step(define, calls):
    @define("controls.withdrawn")
    def wf(ctx, input):
        ctx.step(lambda: control.pause(ctx.run_id), name="a")
        control.resume(ctx.run_id)  # an operator changes their mind before the worker reaches b
        return ctx.step(lambda: calls.update(["b"]) or "b", name="b")

    run = drain(control.start("controls.withdrawn").pk)

    assert run.status == Status.SUCCEEDED
    assert calls == {"b": 1}


def test_it_pauses_rather_than_yields_when_the_pause_arrives_after_the_last_checkpoint(
    define, calls, durable_settings
):
    durable_settings(SLICE_SECONDS=0)

    @define("controls.pause_vs_yield")
    def wf(ctx, input):
        ctx.step(lambda: calls.update(["a"]), name="a")
        control.pause(ctx.run_id)  # an operator's pause lands between a's checkpoint and b
        ctx.step(lambda: calls.update(["b"]), name="b")

    run = control.start("controls.pause_vs_yield")
    executor.drive(run.pk)

    run = drain(run.pk)
    assert run.status == Status.PAUSED
    assert calls == {"a": 1}


def test_it_pauses_rather_than_waits_out_a_backoff_when_paused_during_a_failing_attempt(
    define, calls
):
    @define("controls.pause_vs_backoff")
    def wf(ctx, input):
        def charge():
            calls.update(["charge"])
            control.pause(ctx.run_id)
            raise ValueError("card declined")

        ctx.step(charge, name="charge", retry=RetryPolicy(max_attempts=2, backoff=60))

    run = drain(control.start("controls.pause_vs_backoff").pk)

    assert run.status == Status.PAUSED
    assert sweep().woken == 0
    assert calls == {"charge": 1}


def test_it_cancels_a_queued_run_and_raises_its_epoch(two_steps, calls):
    run = control.start(two_steps("controls.cancel_queued"))
    epoch = run.lease_epoch

    assert control.cancel(run.pk) == Status.CANCELLED
    run = drain(run.pk)
    assert run.status == Status.CANCELLED
    assert run.finished_at is not None
    assert run.lease_epoch == epoch + 1
    assert calls == {}


def test_it_refuses_the_checkpoint_of_the_step_in_flight_when_cancelled(two_steps, calls):
    run = control.start(
        two_steps("controls.cancel_in_flight", during_first=lambda ctx: control.cancel(ctx.run_id))
    )

    assert executor.drive(run.pk) == "fenced out"
    run = Run.objects.get(pk=run.pk)
    assert run.status == Status.CANCELLED
    assert run.steps.count() == 0
    assert calls == {"a": 1}
    assert "step.completed" not in event_types(run.pk)


def test_it_cancels_the_child_runs_of_a_cancelled_run(define):
    @define("controls.child")
    def child(ctx, input):
        return ctx.wait_event("never")

    @define("controls.parent")
    def parent(ctx, input):
        return ctx.child("controls.child", {"n": 1})

    run = control.start("controls.parent")
    drain(run.pk)
    kid = Run.objects.get(parent=run)
    drain(kid.pk)

    control.cancel(run.pk)
    kid.refresh_from_db()
    assert kid.status == Status.CANCELLED
    assert events_of(kid.pk, "run.cancelled") == [{"reason": f"parent run {run.pk} cancelled"}]


def test_it_wakes_the_parent_when_its_child_run_is_cancelled(define):
    @define("controls.lonely_child")
    def child(ctx, input):
        return ctx.wait_event("never")

    @define("controls.waiting_parent")
    def parent(ctx, input):
        return ctx.child("controls.lonely_child")

    run = control.start("controls.waiting_parent")
    drain(run.pk)
    kid = Run.objects.get(parent=run)
    drain(kid.pk)

    control.cancel(kid.pk)
    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert f"child run {kid.pk} cancelled" in run.error


def test_it_stores_a_sent_event_until_the_run_consumes_it(define):
    @define("controls.send")
    def wf(ctx, input):
        ctx.step(lambda: None, name="a")

    run = control.start("controls.send")
    control.send_event(run.pk, "approved", {"by": "ann"})

    assert list(Signal.objects.filter(run=run).values_list("name", "data", "consumed_seq")) == [
        ("approved", {"by": "ann"}, None)
    ]
    assert events_of(run.pk, "event.received") == [{"name": "approved"}]


def finished_run(define, status):
    @define(f"controls.finished.{status}")
    def wf(ctx, input):
        if status == Status.FAILED:
            ctx.step(lambda: 1 / 0, name="boom", retry=NO_RETRY)

    run = control.start(f"controls.finished.{status}")
    if status == Status.CANCELLED:
        control.cancel(run.pk)
    run = drain(run.pk)
    assert run.status == status
    return run


REFUSED = [
    (status, action)
    for status in (Status.SUCCEEDED, Status.CANCELLED, Status.FAILED)
    for action in ("pause", "resume", "cancel", "retry", "send_event")
    if not (status == Status.FAILED and action == "retry")
]


@pytest.mark.parametrize(("status", "action"), REFUSED)
def test_it_refuses_a_control_on_a_finished_run_and_changes_nothing(define, status, action):
    run = finished_run(define, status)
    before = snapshot()
    args = ("late", {"x": 1}) if action == "send_event" else ()

    with pytest.raises(InvalidTransition):
        getattr(control, action)(run.pk, *args)
    assert snapshot() == before


def test_it_numbers_the_events_of_every_control_consecutively(define):
    @define("controls.timeline")
    def wf(ctx, input):
        return ctx.wait_event("go")

    run = control.start("controls.timeline")
    drain(run.pk)
    control.pause(run.pk)
    control.send_event(run.pk, "go", 1)
    control.resume(run.pk)
    drain(run.pk)

    events = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    types = [t for _, t in events]
    for control_event in (
        "run.created",
        "run.pause_requested",
        "event.received",
        "run.resumed",
        "run.succeeded",
    ):
        assert control_event in types
    assert run_row(run.pk)["event_seq"] == len(events)


def test_it_records_a_cancel_and_a_retry_as_events(define):
    @define("controls.cancel_retry_events")
    def wf(ctx, input):
        ctx.step(lambda: 1 / 0, name="boom", retry=NO_RETRY)

    failed = drain(control.start("controls.cancel_retry_events").pk)
    control.retry(failed.pk)
    control.cancel(failed.pk)

    types = event_types(failed.pk)
    assert types[-2:] == ["run.retried", "run.cancelled"]
    assert events_of(failed.pk, "run.retried") == [{"steps": [0]}]
    assert [e.seq for e in Event.objects.filter(run=failed).order_by("seq")] == list(
        range(1, len(types) + 1)
    )
