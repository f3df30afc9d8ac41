"""Transactional and at-most-once steps, and runs whose definition changed."""

import pytest
from django.contrib.auth.models import Group

from durable import control, registry
from durable.errors import InvalidTransition
from durable.models import Run, Status, StepStatus
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_commits_a_transactional_step_with_its_record(define):
    @define("t.transactional")
    def wf(ctx, input):
        return ctx.step(lambda: Group.objects.create(name="made-once").pk, name="create", transactional=True)

    run = drain(control.start("t.transactional").pk)
    assert run.status == Status.SUCCEEDED
    assert Group.objects.filter(name="made-once").count() == 1


def test_it_runs_no_transactional_body_after_losing_the_lease(define, monkeypatch):
    from django.db.models import F

    from durable.context import Context

    calls = []

    @define("t.fenced-tx")
    def wf(ctx, input):
        def create():
            calls.append(1)
            Group.objects.create(name="zombie-effect")
            return 1

        return ctx.step(create, name="create", transactional=True)

    def another_worker_claims(self):
        Run.objects.filter(pk=self.run_id).update(lease_epoch=F("lease_epoch") + 1)

    monkeypatch.setattr(Context, "_boundary", another_worker_claims)
    run = drain(control.start("t.fenced-tx").pk)
    assert calls == []
    assert not Group.objects.filter(name="zombie-effect").exists()
    assert run.steps.count() == 0
    assert run.status == Status.RUNNING  # left for the sweeper and the new owner


def test_it_stops_as_outcome_unknown_when_an_at_most_once_step_was_cut_off(define):
    calls = []

    @define("t.at-most-once")
    def wf(ctx, input):
        return ctx.step(lambda: calls.append(1) or "sent", name="send_payment", at_most_once=True)

    run = control.start("t.at-most-once")
    # simulate a worker that recorded the intent and died before the outcome: record the intent
    # by running the body with a crash right after the intent commit
    from durable import context as context_module

    original = context_module.Context._checkpoint

    def crash_after_intent(self, seq, name, kind, status, *args, **kwargs):
        original(self, seq, name, kind, status, *args, **kwargs)
        if status == StepStatus.STARTED:
            raise KeyboardInterrupt("worker died")

    context_module.Context._checkpoint = crash_after_intent
    try:
        with pytest.raises(KeyboardInterrupt):
            drain(run.pk)
    finally:
        context_module.Context._checkpoint = original
    Run.objects.filter(pk=run.pk).update(status=Status.QUEUED, lease_owner="")
    run = drain(run.pk)
    assert run.status == Status.OUTCOME_UNKNOWN
    assert calls == []
    with pytest.raises(InvalidTransition):
        control.resume(run.pk)

    control.resolve(run.pk, 0, happened=True, output="sent by hand")
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output == "sent by hand"
    assert calls == []


def test_it_reruns_an_unknown_step_a_person_says_did_not_happen(define):
    calls = []

    @define("t.at-most-once-2")
    def wf(ctx, input):
        return ctx.step(lambda: calls.append(1) or "sent", name="send", at_most_once=True)

    run = control.start("t.at-most-once-2")
    Run.objects.filter(pk=run.pk).update(status=Status.OUTCOME_UNKNOWN)
    run.steps.create(seq=0, name="send", kind="step", status=StepStatus.STARTED, epoch=1)
    control.resolve(run.pk, 0, happened=False)
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert calls == [1]


def test_it_stops_a_run_whose_definition_changed_and_continues_on_request(define):
    @define("t.versioned", version="1")
    def v1(ctx, input):
        ctx.step(lambda: 1, name="a")
        ctx.sleep(0.0)
        return ctx.step(lambda: 2, name="b")

    run = control.start("t.versioned")
    Run.objects.filter(pk=run.pk).update()
    # first slice: step a runs, then the zero sleep completes at once; park it by pausing after a
    control.pause(run.pk)
    drain(run.pk)  # paused before anything ran
    registry.workflow("t.versioned", version="2")(v1)
    control.resume(run.pk)
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED  # no journal yet: adopts version 2
    assert run.workflow_version == "2"

    run2 = control.start("t.versioned")
    Run.objects.filter(pk=run2.pk).update(workflow_version="1")
    run2.steps.create(seq=0, name="a", kind="step", status=StepStatus.COMPLETED, output=1, epoch=1)
    run2 = drain(run2.pk)
    assert run2.status == Status.DEFINITION_CHANGED
    assert run2.events.filter(type="run.definition_changed").exists()
    control.resume(run2.pk)
    run2 = drain(run2.pk)
    assert run2.status == Status.SUCCEEDED
    assert run2.workflow_version == "2"
