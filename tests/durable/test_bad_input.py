"""Bad input through the Python API: a clear, named error, and nothing already stored changes."""

import pytest

from durable import RetryPolicy, control, executor
from durable.errors import (
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    RunNotFound,
    UnknownWorkflow,
)
from durable.models import Run, Status, StepStatus
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, snapshot

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)

LIMIT = 1000


@pytest.fixture
def small_payloads(durable_settings):
    durable_settings(MAX_PAYLOAD_BYTES=LIMIT)


@pytest.fixture
def echo(define):
    @define("bad.echo")
    def wf(ctx, input):
        return ctx.step(lambda: input, name="echo")

    control.start(
        "bad.echo", {"already": "stored"}
    )  # so that "nothing changes" has something to keep
    return "bad.echo"


def test_it_refuses_to_start_an_unknown_workflow(echo):
    before = snapshot()

    with pytest.raises(UnknownWorkflow, match="unknown workflow 'nope'"):
        control.start("nope", {})
    assert snapshot() == before


def test_it_refuses_to_start_with_input_that_is_not_json(echo):
    before = snapshot()

    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        control.start(echo, {"when": object()})
    assert snapshot() == before


def test_it_refuses_to_start_with_input_over_the_payload_limit(echo, small_payloads):
    before = snapshot()

    with pytest.raises(PayloadTooLarge, match="over the limit of 1,000 bytes"):
        control.start(echo, {"text": "x" * LIMIT})
    assert snapshot() == before


def test_it_refuses_an_empty_idempotency_key(echo):
    before = snapshot()

    with pytest.raises(InvalidInput):
        control.start(echo, {}, idempotency_key="  ")
    assert snapshot() == before


def test_it_fails_the_run_clearly_when_a_step_returns_something_json_cannot_hold(define, calls):
    @define("bad.set")
    def wf(ctx, input):
        return ctx.step(
            lambda: calls.update(["tags"]) or {"tags": {"a", "b"}},
            name="tags",
            retry=RetryPolicy(3, 0),
        )

    run = drain(control.start("bad.set").pk)

    assert run.status == Status.FAILED
    assert (
        "durable.errors.NotSerializable: the result of step 0 'tags' is not JSON-serialisable"
        in run.error
    )
    step = run.steps.get(seq=0)
    assert (step.status, step.attempts, step.output) == (StepStatus.FAILED, 1, None)
    assert calls == {"tags": 1}  # not retried: the same body would return the same value


def test_it_fails_the_run_clearly_when_a_step_returns_more_than_the_payload_limit(
    define, small_payloads
):
    @define("bad.big_step")
    def wf(ctx, input):
        return ctx.step(lambda: "x" * LIMIT, name="big")

    run = drain(control.start("bad.big_step").pk)

    assert run.status == Status.FAILED
    assert (
        "PayloadTooLarge: the result of step 0 'big' is 1,002 bytes, over the limit of 1,000 bytes"
        in run.error
    )
    assert run.steps.get(seq=0).output is None


def test_it_fails_the_run_clearly_when_the_workflow_returns_something_json_cannot_hold(define):
    @define("bad.return")
    def wf(ctx, input):
        ctx.step(lambda: 1, name="one")
        return {"at": object}

    run = drain(control.start("bad.return").pk)

    assert run.status == Status.FAILED
    assert run.error.startswith(
        "NotSerializable: the workflow's return value is not JSON-serialisable"
    )
    assert run.output is None
    assert run.steps.get(seq=0).status == StepStatus.COMPLETED


def test_it_fails_a_run_whose_workflow_is_no_longer_registered(define):
    @define("bad.gone")
    def wf(ctx, input):
        return 1

    run = control.start("bad.gone")
    from durable import registry

    registry.unregister("bad.gone")

    run = drain(run.pk)
    assert run.status == Status.FAILED
    assert "unknown workflow 'bad.gone'" in run.error


def test_it_refuses_event_data_over_the_payload_limit(define, small_payloads):
    @define("bad.waits")
    def wf(ctx, input):
        return ctx.wait_event("doc")

    run = drain(control.start("bad.waits").pk)
    before = snapshot()

    with pytest.raises(PayloadTooLarge):
        control.send_event(run.pk, "doc", "x" * LIMIT)
    assert snapshot() == before


def test_it_refuses_event_data_that_is_not_json(echo):
    run = Run.objects.get(workflow=echo)
    before = snapshot()

    with pytest.raises(InvalidInput):
        control.send_event(run.pk, "doc", {"at": object()})
    assert snapshot() == before


@pytest.mark.parametrize("action", ["get_run", "pause", "resume", "cancel", "retry", "send_event"])
@pytest.mark.parametrize("run_id", [999999, "abc", None])
def test_it_raises_run_not_found_for_an_unknown_run(echo, action, run_id):
    before = snapshot()
    args = ("doc",) if action == "send_event" else ()

    with pytest.raises(RunNotFound):
        getattr(control, action)(run_id, *args)
    assert snapshot() == before


def test_it_raises_invalid_transition_for_a_control_that_does_not_apply(echo):
    run = drain(Run.objects.get(workflow=echo).pk)
    assert run.status == Status.SUCCEEDED
    before = snapshot()

    with pytest.raises(InvalidTransition, match=f"cannot pause run {run.pk}: it is succeeded"):
        control.pause(run.pk)
    assert snapshot() == before


def test_it_does_nothing_when_a_run_is_delivered_twice(echo):
    run = Run.objects.get(workflow=echo)
    assert executor.drive(run.pk) == "succeeded"
    before = snapshot()

    assert executor.drive(run.pk) == "not claimed"
    assert snapshot() == before


@pytest.mark.parametrize("text", ["nul \x00 inside", "lone \ud800 surrogate"])
def test_it_refuses_input_the_database_cannot_store(text):
    from durable import control
    from durable.errors import InvalidInput
    from durable.models import Run

    with pytest.raises(InvalidInput, match="NUL|surrogate"):
        control.start("demo.analysis", {"note": text})
    assert not Run.objects.exists()


def test_it_fails_a_run_clearly_when_a_step_returns_text_the_database_cannot_store(define):
    from durable import control
    from durable.models import Status
    from tests.conftest import drain

    @define("t.nul-output")
    def wf(ctx, input):
        return ctx.step(lambda: "a\x00b", name="nul")

    run = drain(control.start("t.nul-output").pk)
    assert run.status == Status.FAILED
    assert "NUL character" in run.error


def test_it_stores_an_exception_message_holding_a_nul(define):
    from durable import control
    from durable.models import Status
    from tests.conftest import drain

    @define("t.nul-error")
    def wf(ctx, input):
        def boom():
            raise ValueError("bad \x00 byte")

        return ctx.step(boom, name="boom", retry=__import__("durable").NO_RETRY)

    run = drain(control.start("t.nul-error").pk)
    assert run.status == Status.FAILED
    assert "bad \\x00 byte" in run.steps.get(seq=0).error


def test_it_records_a_step_whose_arguments_hold_a_nul(define):
    from durable import control
    from durable.models import Status
    from tests.conftest import drain

    @define("t.nul-args")
    def wf(ctx, input):
        return ctx.step(lambda text: len(text), "a\x00b", name="count")

    run = drain(control.start("t.nul-args").pk)
    assert run.status == Status.SUCCEEDED and run.output == 3
    assert "repr" in run.steps.get(seq=0).input
