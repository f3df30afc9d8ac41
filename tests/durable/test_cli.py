"""`manage.py durable ...`: runs and controls from the command line; mistakes are one line."""

import io
import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from durable import NO_RETRY, control
from durable.models import Run, Signal, Status
from tests.conftest import drain
from tests.durable.support import ENGINE_APPS, snapshot

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


def durable(*args):
    out = io.StringIO()
    call_command("durable", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def greeter(define):
    @define("cli.greet")
    def wf(ctx, input):
        name = ctx.step(lambda: input.get("name", "world"), name="name")
        ctx.sleep(0, name="breathe")
        return f"hello {name}"

    return "cli.greet"


@pytest.fixture
def finished(greeter):
    return drain(control.start(greeter, {"name": "ann"}).pk)


def test_it_starts_a_run_and_prints_its_id(greeter):
    out = durable("start", greeter, "--input", '{"name": "ann"}')

    run = Run.objects.get(pk=int(out.strip()))
    assert (run.workflow, run.input, run.status) == (greeter, {"name": "ann"}, Status.QUEUED)


def test_it_starts_one_run_for_one_idempotency_key(greeter):
    first = durable("start", greeter, "--idempotency-key", "k-1")
    second = durable("start", greeter, "--idempotency-key", "k-1")

    assert first == second
    assert Run.objects.count() == 1


def test_it_refuses_an_unknown_workflow(greeter):
    before = snapshot()

    with pytest.raises(CommandError, match="unknown workflow 'nope'"):
        durable("start", "nope")
    assert snapshot() == before


def test_it_refuses_malformed_json_input(greeter):
    before = snapshot()

    with pytest.raises(CommandError, match="--input is not valid JSON: Expecting property name"):
        durable("start", greeter, "--input", "{name: ann}")
    assert snapshot() == before


def test_it_refuses_input_over_the_payload_limit(greeter, durable_settings):
    durable_settings(MAX_PAYLOAD_BYTES=100)
    before = snapshot()

    with pytest.raises(CommandError, match="over the limit of 100 bytes"):
        durable("start", greeter, "--input", json.dumps({"name": "x" * 100}))
    assert snapshot() == before


@pytest.mark.parametrize("run_id", ["999999", "abc"])
def test_it_refuses_an_unknown_run_id(greeter, run_id):
    with pytest.raises(CommandError, match=f"no run with id '{run_id}'"):
        durable("show", run_id)


def test_it_refuses_a_control_on_a_finished_run(finished):
    before = snapshot()

    with pytest.raises(CommandError, match=f"cannot cancel run {finished.pk}: it is succeeded"):
        durable("cancel", str(finished.pk))
    assert snapshot() == before


def test_it_refuses_malformed_json_event_data(greeter):
    run = control.start(greeter)
    before = snapshot()

    with pytest.raises(CommandError, match="--data is not valid JSON"):
        durable("send-event", str(run.pk), "approved", "--data", "{oops")
    assert snapshot() == before


def test_it_sends_an_event(greeter):
    run = control.start(greeter)

    out = durable("send-event", str(run.pk), "approved", "--data", '{"by": "ann"}')
    assert out.strip() == f"run {run.pk}: event 'approved' sent"
    assert Signal.objects.get(run=run).data == {"by": "ann"}


def test_it_pauses_resumes_and_cancels_a_run(greeter):
    run = control.start(greeter)

    assert durable("pause", str(run.pk)).strip() == f"run {run.pk}: paused"
    assert durable("resume", str(run.pk)).strip() == f"run {run.pk}: queued"
    assert durable("cancel", str(run.pk)).strip() == f"run {run.pk}: cancelled"
    assert Run.objects.get(pk=run.pk).status == Status.CANCELLED


def test_it_retries_a_failed_run(define):
    @define("cli.fails")
    def wf(ctx, input):
        ctx.step(lambda: 1 / 0, name="divide", retry=NO_RETRY)

    run = drain(control.start("cli.fails").pk)

    assert durable("retry", str(run.pk)).strip() == f"run {run.pk}: queued"
    assert Run.objects.get(pk=run.pk).status == Status.QUEUED


def iso(value):
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def test_it_shows_a_run_as_json_with_the_documented_fields(finished):
    shown = json.loads(durable("show", str(finished.pk), "--json"))

    assert shown["id"] == finished.pk
    assert shown["status"] == "succeeded"
    assert shown["input"] == {"name": "ann"}
    assert shown["output"] == "hello ann"
    assert shown["error"] == ""
    assert iso(shown["started_at"]) <= iso(shown["finished_at"])
    assert [
        (s["seq"], s["name"], s["kind"], s["status"], s["attempts"]) for s in shown["steps"]
    ] == [
        (0, "name", "step", "completed", 1),
        (1, "breathe", "sleep", "completed", 1),
    ]
    for step in shown["steps"]:
        assert step["worker"]
        assert iso(step["started_at"]) <= iso(step["finished_at"])
    assert [e["seq"] for e in shown["events"]] == list(range(1, len(shown["events"]) + 1))
    assert shown["events"][0]["type"] == "run.created"
    assert shown["events"][-1]["type"] == "run.succeeded"
    for event in shown["events"]:
        assert set(event) >= {"seq", "type", "created_at", "data"}
        assert isinstance(event["data"], dict)
        iso(event["created_at"])


def test_it_shows_a_failed_run_with_its_error(define):
    @define("cli.broken")
    def wf(ctx, input):
        ctx.step(lambda: 1 / 0, name="divide", retry=NO_RETRY)

    run = drain(control.start("cli.broken").pk)
    shown = json.loads(durable("show", str(run.pk), "--json"))

    assert shown["status"] == "failed"
    assert "ZeroDivisionError" in shown["error"]
    assert shown["output"] is None
    assert shown["steps"][0]["status"] == "failed"


def test_it_lists_runs_newest_first_as_json(greeter):
    older = control.start(greeter)
    newer = control.start(greeter)

    listed = json.loads(durable("runs", "--json"))
    assert [r["id"] for r in listed] == [newer.pk, older.pk]


def test_it_exits_non_zero_with_a_one_line_message_for_an_unknown_workflow(greeter):
    before = snapshot()
    db = connection.settings_dict
    env = dict(os.environ)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    else:
        env["DURABLE_SQLITE_PATH"] = db["NAME"]

    done = subprocess.run(
        [sys.executable, "manage.py", "durable", "start", "nope"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "unknown workflow 'nope'" in done.stderr
    assert snapshot() == before
