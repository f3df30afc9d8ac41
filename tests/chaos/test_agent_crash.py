"""SIGKILL real `durable worker` process trees while an agent runs on the openai provider (the official
client against a fake OpenAI server on loopback): once between a model response and its tool calls,
once in the middle of a tool call. After each takeover the model server has seen no request twice
(every recorded model call came back from the journal) and no completed tool ran twice.

Also `durable demo crash-resume`, which does the same with the demo analysis agent and real workers.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command

from durable import control
from durable.models import Run, Status, Step, StepStatus
from tests.agents import chaos_agent
from tests.agents.fakes import FakeModelServer, Reply, Request, openai_reply, serving
from tests.chaos.harness import (
    BASE_DIR,
    Worker,
    WorkerPool,
    database_env,
    effect_counts,
    wait_status,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

API_KEY = "sk-chaos-agent-key-never-stored-4f1d2c"
TOOL_TURNS = 3  # model calls that ask for two tools each; the next one answers


def fake_openai(request: Request) -> Reply:
    """A deterministic model: the reply depends only on the conversation it is sent."""
    turn = 1 + sum(1 for m in request.json["messages"] if m["role"] == "assistant")
    if turn > TOOL_TURNS:
        return openai_reply("all touched")
    first = 2 * (turn - 1)
    return openai_reply(None, [(f"call_{first + i}", "touch", {"index": first + i}) for i in range(2)])


@pytest.fixture
def model_server() -> Any:
    with serving(fake_openai) as server:
        yield server


def start_worker(pool: WorkerPool, server: FakeModelServer, **hooks: str) -> Worker:
    """A worker process tree that knows the chaos agent; `hooks` are its AGENT_CHAOS_* variables."""
    name = "ABCDEFGHIJ"[len(pool.workers)]
    log_path = pool.log_dir / f"worker-{name}.log"
    env = {**database_env(), "OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": API_KEY, **hooks}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.agents.chaos_worker", "durable", "worker", "--workers", "1"],
            cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(name, proc, log_path)
    pool.workers.append(worker)
    worker.wait_ready()
    return worker


def wait_mark(marks: Path, prefix: str) -> str:
    def found() -> str | None:
        lines = marks.read_text().splitlines() if marks.exists() else []
        return next((line for line in lines if line.startswith(prefix)), None)

    return wait_until(found, 60, f"a worker to reach '{prefix}'")


def recorded(run_id: int) -> dict[int, tuple[str, str, str]]:
    return {s.seq: (s.kind, s.status, s.worker) for s in Step.objects.filter(run_id=run_id)}


def test_it_resends_no_model_call_and_reruns_no_tool_after_two_kills(workers, model_server, tmp_path):
    paths = {name: str(tmp_path / f"{name}.log") for name in ("starts", "effects", "marks")}
    first = start_worker(workers, model_server, AGENT_CHAOS_HANG_AFTER_LLM="2")
    run = control.start(chaos_agent.NAME, {"message": "Touch things 0 to 5.", **paths})

    # Kill 1: the second model response is checkpointed; its two tool calls have not started.
    assert wait_mark(Path(paths["marks"]), "after-llm") == f"after-llm {run.pk}:3"
    assert sorted(recorded(run.pk)) == [0, 1, 2, 3]
    first.kill()
    second = start_worker(workers, model_server, AGENT_CHAOS_HANG_IN_TOOL="3")

    # Kill 2: in the middle of the second tool call of that response (seq 5), after the first (seq 4).
    assert wait_mark(Path(paths["marks"]), "in-tool") == f"in-tool {run.pk}:5"
    before_second_kill = recorded(run.pk)
    assert sorted(before_second_kill) == [0, 1, 2, 3, 4]
    second.kill()
    third = start_worker(workers, model_server)

    run = wait_status(run.pk, Status.SUCCEEDED, Status.FAILED, timeout=60)
    assert run.status == Status.SUCCEEDED, run.error
    assert run.output["output"] == "all touched"
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    assert [(s.seq, s.kind, s.status) for s in steps] == [
        (seq, "llm" if seq % 3 == 0 else "tool", StepStatus.COMPLETED) for seq in range(10)]

    # The model server: one request per recorded model call, none sent twice.
    assert len(model_server.body_counts) == 4
    assert set(model_server.body_counts.values()) == {1}, f"a model request was repeated: {model_server.body_counts}"

    # The tools: every completed one ran once; only the call cut off by the second kill started twice.
    tool_keys = {f"{run.pk}:{s.seq}" for s in steps if s.kind == "tool"}
    assert effect_counts(Path(paths["effects"])) == Counter({key: 1 for key in tool_keys})
    assert effect_counts(Path(paths["starts"])) == Counter({key: 2 if key == f"{run.pk}:5" else 1 for key in tool_keys})

    # Who did what: nothing recorded before a kill was written again.
    by = {s.seq: s.worker for s in steps}
    assert all(first.did(by[seq]) for seq in range(4))
    assert second.did(by[4]) and before_second_kill[4][2] == by[4]
    assert all(third.did(by[seq]) for seq in range(5, 10))
    assert (run.claims, run.recoveries) == (3, 2)

    for model in apps.get_models():
        for row in model.objects.all().values():
            assert API_KEY not in repr(row), f"the API key is stored in {model.__name__}"


def test_it_shows_the_crash_and_resume_demo(workers, tmp_path):
    out = StringIO()
    call_command("durable", "demo", "crash-resume", "--chunks", "6", "--step-ms", "200", "--kill-after", "2",
                 stdout=out)
    text = out.getvalue()

    run = Run.objects.get(workflow="demo.analyst")
    assert run.status == Status.SUCCEEDED
    assert (run.claims, run.recoveries) == (2, 1)
    assert "SIGKILL worker A's process group" in text
    assert "returned from the journal" in text and "no completed step ran twice." in text
    assert text.count("ran on worker A") >= 3 and "ran on worker B" in text
