"""The agent of the real-process crash test (tests/chaos/test_agent_crash.py), and its fault hooks.

Imported by the test process (to start runs) and by the workers started through
`python -m tests.agents.chaos_worker durable worker`. The agent uses the openai provider against the
test's fake server (OPENAI_BASE_URL). Its tool appends "<idempotency key>" to a starts file when it
begins and to an effects file when its side effect is done (paths in the run input).

Fault hooks, only in a worker whose environment asks for them (the worker then hangs, holding its
lease, until the test SIGKILLs its process group):
- AGENT_CHAOS_HANG_AFTER_LLM=<turn>: after that model call is checkpointed, before its tool calls.
- AGENT_CHAOS_HANG_IN_TOOL=<index>: inside the tool call for that index, after it started and
  before its side effect.
Each hang first appends a line to the run input's marks file, so the test knows where it is.
"""

from __future__ import annotations

import os
import time
from typing import Any

from durable.agents import Agent, AgentRun, register
from durable.tools import ToolContext, tool

NAME = "chaos.agent"
MODEL = "openai:fake-model"


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{line}\n")


def _hang(marks: str, line: str) -> None:
    _append(marks, line)
    while True:  # until SIGKILL; the heartbeat thread keeps the lease meanwhile
        time.sleep(1)


@tool
def touch(index: int, context: ToolContext) -> dict[str, Any]:
    """Touch one numbered thing (an external side effect).

    Args:
        index: the thing's number
    """
    paths = context.input
    _append(paths["starts"], context.idempotency_key)
    if os.environ.get("AGENT_CHAOS_HANG_IN_TOOL") == str(index):
        _hang(paths["marks"], f"in-tool {context.idempotency_key}")
    _append(paths["effects"], context.idempotency_key)
    return {"index": index, "touched": True}


agent = register(Agent(
    NAME, MODEL, "Touch the things you are asked to touch, two at a time.", tools=[touch], max_turns=8,
))


def install_hooks() -> None:
    hang_turn = os.environ.get("AGENT_CHAOS_HANG_AFTER_LLM")
    if not hang_turn:
        return
    original = AgentRun.call_model

    def call_model(self: AgentRun) -> dict[str, Any]:
        replayed = self.ctx.is_replaying
        reply = original(self)
        if not replayed and str(self.turns) == hang_turn and self.agent.name == NAME:
            _hang(self.input["marks"], f"after-llm {self.ctx.run_id}:{self.ctx.position - 1}")
        return reply

    AgentRun.call_model = call_model  # type: ignore[method-assign]
