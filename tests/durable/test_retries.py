"""Retries: attempts and errors are recorded, the policy is honoured, a person can retry a run."""

from datetime import timedelta

import pytest
from django.utils import timezone

from durable import NO_RETRY, RetryPolicy, control, current_step
from durable.errors import StepFailed
from durable.models import Run, Status, StepStatus
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, event_types, make_due

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)

QUICK = RetryPolicy(max_attempts=3, backoff=0)


def flaky(calls, name, failures):
    """A step body that fails its first `failures` calls."""

    def body():
        calls.update([name])
        if calls[name] <= failures:
            raise ValueError(f"{name} failed on call {calls[name]}")
        return f"{name} ok"

    return body


def test_it_records_a_failing_step_with_its_error_and_attempts(define, calls):
    @define("retries.record")
    def wf(ctx, input):
        ctx.step(flaky(calls, "charge", failures=1), name="charge", retry=NO_RETRY)

    run = drain(control.start("retries.record").pk)

    step = run.steps.get(seq=0)
    assert step.status == StepStatus.FAILED
    assert step.attempts == 1
    assert "ValueError: charge failed on call 1" in step.error


def test_it_retries_a_step_until_it_succeeds_within_max_attempts(define, calls):
    @define("retries.within")
    def wf(ctx, input):
        return ctx.step(flaky(calls, "charge", failures=2), name="charge", retry=QUICK)

    run = drain(control.start("retries.within").pk)

    assert run.status == Status.SUCCEEDED
    assert run.output == "charge ok"
    step = run.steps.get(seq=0)
    assert (step.status, step.attempts) == (StepStatus.COMPLETED, 3)
    assert [t for t in event_types(run.pk) if t.startswith("step.")] == [
        "step.error",
        "step.error",
        "step.completed",
    ]


def test_it_fails_the_run_with_the_traceback_after_the_last_attempt(define, calls):
    @define("retries.exhausted")
    def wf(ctx, input):
        ctx.step(
            flaky(calls, "charge", failures=99),
            name="charge",
            retry=RetryPolicy(max_attempts=2, backoff=0),
        )

    run = drain(control.start("retries.exhausted").pk)

    assert run.status == Status.FAILED
    assert "Traceback" in run.error
    assert "ValueError: charge failed on call 2" in run.error
    assert calls["charge"] == 2
    step = run.steps.get(seq=0)
    assert (step.status, step.attempts) == (StepStatus.FAILED, 2)


def test_it_gives_every_attempt_the_same_idempotency_key(define):
    keys = []

    @define("retries.keys")
    def wf(ctx, input):
        def body():
            info = current_step()
            keys.append((info.idempotency_key, info.attempt))
            if info.attempt < 3:
                raise ValueError("again")

        ctx.step(lambda: "first", name="first")
        ctx.step(body, name="charge", retry=QUICK)

    run = drain(control.start("retries.keys").pk)

    assert keys == [(f"{run.pk}:1", 1), (f"{run.pk}:1", 2), (f"{run.pk}:1", 3)]


def test_it_parks_the_run_as_waiting_during_a_long_backoff(define, calls):
    @define("retries.parked")
    def wf(ctx, input):
        ctx.step(
            flaky(calls, "charge", failures=1),
            name="charge",
            retry=RetryPolicy(max_attempts=2, backoff=60),
        )

    run = drain(control.start("retries.parked").pk)

    assert run.status == Status.WAITING
    assert run.lease_owner == ""
    assert (
        timezone.now() + timedelta(seconds=45)
        < run.wake_at
        < timezone.now() + timedelta(seconds=75)
    )
    step = run.steps.get(seq=0)
    assert (step.status, step.attempts) == (StepStatus.ERROR, 1)
    assert calls["charge"] == 1


def test_it_does_not_retry_before_the_backoff_is_over(define, calls):
    @define("retries.not_yet")
    def wf(ctx, input):
        ctx.step(
            flaky(calls, "charge", failures=1),
            name="charge",
            retry=RetryPolicy(max_attempts=2, backoff=60),
        )

    run = drain(control.start("retries.not_yet").pk)

    assert sweep().woken == 0
    run.refresh_from_db()
    assert run.status == Status.WAITING


def test_it_retries_when_the_sweeper_wakes_the_run_after_the_backoff(define, calls):
    @define("retries.woken")
    def wf(ctx, input):
        return ctx.step(
            flaky(calls, "charge", failures=1),
            name="charge",
            retry=RetryPolicy(max_attempts=2, backoff=60),
        )

    run = drain(control.start("retries.woken").pk)
    make_due(run.pk)
    assert sweep().woken == 1

    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.steps.get(seq=0).attempts == 2
    assert calls["charge"] == 2


def test_it_reruns_only_the_failed_step_when_a_person_retries_the_run(define, calls):
    @define("retries.by_hand")
    def wf(ctx, input):
        first = ctx.step(flaky(calls, "load", failures=0), name="load")
        second = ctx.step(flaky(calls, "charge", failures=1), name="charge", retry=NO_RETRY)
        return [first, second]

    run = drain(control.start("retries.by_hand").pk)
    assert run.status == Status.FAILED

    assert control.retry(run.pk) == Status.QUEUED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == ["load ok", "charge ok"]
    assert calls == {"load": 1, "charge": 2}


def test_it_gives_the_retried_step_a_fresh_retry_budget(define, calls):
    @define("retries.fresh_budget")
    def wf(ctx, input):
        ctx.step(
            flaky(calls, "charge", failures=3),
            name="charge",
            retry=RetryPolicy(max_attempts=2, backoff=0),
        )

    run = drain(control.start("retries.fresh_budget").pk)
    control.retry(run.pk)
    run = drain(run.pk)

    assert run.status == Status.SUCCEEDED
    assert calls["charge"] == 4
    assert run.steps.get(seq=0).attempts == 2


def test_it_lets_the_workflow_continue_after_it_catches_a_failed_step(define, calls):
    @define("retries.caught")
    def wf(ctx, input):
        try:
            return ctx.step(flaky(calls, "primary", failures=99), name="primary", retry=NO_RETRY)
        except StepFailed as exc:
            failed = exc.step_name
            return ctx.step(lambda: f"fallback after {failed}", name="fallback")

    run = drain(control.start("retries.caught").pk)

    assert run.status == Status.SUCCEEDED
    assert run.output == "fallback after primary"
    assert list(run.steps.values_list("name", "status")) == [
        ("primary", StepStatus.FAILED),
        ("fallback", StepStatus.COMPLETED),
    ]


def test_it_keeps_a_failure_the_workflow_caught_when_a_person_retries_the_run(define, calls):
    @define("retries.caught_then_failed")
    def wf(ctx, input):
        try:
            source = ctx.step(flaky(calls, "primary", failures=1), name="primary", retry=NO_RETRY)
        except StepFailed:
            source = ctx.step(lambda: "fallback ok", name="fallback")
        return [
            source,
            ctx.step(flaky(calls, "publish", failures=1), name="publish", retry=NO_RETRY),
        ]

    run = drain(control.start("retries.caught_then_failed").pk)
    assert run.status == Status.FAILED

    control.retry(run.pk)
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == ["fallback ok", "publish ok"]
    assert calls == {"primary": 1, "publish": 2}


def test_it_runs_the_failed_child_again_when_a_person_retries_its_parent(define, calls):
    @define("retries.child")
    def child(ctx, input):
        return ctx.step(flaky(calls, "child_work", failures=1), name="child_work", retry=NO_RETRY)

    @define("retries.parent")
    def parent(ctx, input):
        ctx.step(flaky(calls, "prepare", failures=0), name="prepare")
        return ctx.child("retries.child")

    run = drain(control.start("retries.parent").pk)
    kid = Run.objects.get(parent=run)
    drain(kid.pk)
    assert drain(run.pk).status == Status.FAILED

    control.retry(run.pk)
    assert drain(run.pk).status == Status.WAITING
    assert drain(kid.pk).status == Status.SUCCEEDED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == "child_work ok"
    assert calls == {"prepare": 1, "child_work": 2}
    assert Run.objects.filter(parent=run).count() == 1
