"""Agents: a model, instructions, tools and handoffs, compiled into a durable workflow.

    support = register(Agent(
        name="support",
        model="openai:gpt-4o-mini",
        instructions="You help customers with their orders.",
        tools=[lookup_order, propose_refund],
        handoffs=[billing],
        max_turns=10,
    ))

Put definitions in an `agents` (or `workflows`) module of an installed app: it is imported at
start-up by every process, like workflows. Start a run with `start("support", "Where is A-1001?")`,
`control.start("support", {"message": ...})` or `manage.py durable start support --message ...`.

The journal of an agent run:
- one "llm" step per model call. Its input holds only what is new since the previous model call
  (the tool results, or the user's message) and `builds_on`, the seq numbers of the steps the
  conversation continues from; never the whole conversation, which is rebuilt in memory on replay
  from the recorded outputs. Its output is the model's message, tokens in and out, latency and cost.
- one "tool" step per tool call, several per model response; inside it `durable.current_step()`
  (or a `ToolContext` parameter) gives the idempotency key. A call the agent refuses (unknown tool,
  arguments that fail the schema) and a tool that raises are failed tool steps whose error the
  model sees as the tool's result.
- one "handoff" entry per handoff: a child run of the other agent, waited for durably.

The agent's version (recorded on every run) is a hash of its instructions, model, tool schemas and
settings: a run whose agent changed stops as `definition_changed` for an admin to resume or cancel.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from durable import control, providers, registry
from durable.context import NO_RETRY, Context, RetryPolicy
from durable.errors import DurableError, InvalidInput, StepFailed
from durable.journal import dumps
from durable.models import Run
from durable.providers import ModelRequest, short
from durable.tools import Tool, as_tool, run_tool, validate

MODEL_RETRY = RetryPolicy(max_attempts=5, backoff=1.0, multiplier=2.0, max_backoff=60.0)
Prompt = Callable[[Any], str]


class AgentError(DurableError):
    """An agent run that cannot go on (its budget is spent, its input is unusable)."""


class BudgetExceeded(AgentError):
    pass


class UnknownAgent(DurableError):
    def __init__(self, name: str):
        known = ", ".join(sorted(a.name for a in all_agents())) or "none"
        super().__init__(f"unknown agent {name!r} (registered agents: {known})")
        self.name = name


class ToolCallRefused(Exception):
    """A tool call the agent does not make: unknown tool, arguments that fail the schema."""

    retryable = False


@dataclass(frozen=True)
class Handoff:
    agent: str  # the target agent's (workflow) name
    tool_name: str
    description: str
    target: Agent | None = None

    def spec(self) -> dict[str, Any]:
        return {"name": self.tool_name, "description": self.description, "parameters": HANDOFF_PARAMETERS}


HANDOFF_PARAMETERS = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "the request for the other agent, "
                               "with everything it needs to know"}},
    "required": ["message"],
    "additionalProperties": False,
}


class Agent:
    def __init__(
        self,
        name: str,
        model: str,
        instructions: str = "",
        tools: Sequence[Tool | Callable[..., Any]] = (),
        handoffs: Sequence[Agent | str] = (),
        *,
        max_turns: int = 10,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        model_settings: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        version: str = "",
        description: str = "",
        prompt: Prompt | None = None,
    ):
        providers.split_model(model)  # an unknown provider is refused here, not in a worker
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.name = name
        self.model = model
        self.instructions = instructions
        self.tools = [as_tool(t) for t in tools]
        self.handoffs = [_handoff(h) for h in handoffs]
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.model_settings = dict(model_settings or {})
        self.timeout = timeout
        self.retry = retry or MODEL_RETRY
        self.description = description or (instructions.strip().splitlines() or [""])[0][:200]
        self.prompt = prompt
        self.tools_by_name = {t.name: t for t in self.tools}
        self.handoffs_by_tool = {h.tool_name: h for h in self.handoffs}
        names = [t.name for t in self.tools] + [h.tool_name for h in self.handoffs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"agent {name!r}: tool names used twice: {', '.join(duplicates)}")
        self.model_tools = [{k: t.spec()[k] for k in ("name", "description", "parameters")} for t in self.tools]
        self.model_tools += [h.spec() for h in self.handoffs]
        self.version = self._version(version)

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, {self.model!r}, version={self.version!r})"

    def _version(self, label: str) -> str:
        """A hash of everything that decides what the agent does; a run records it."""
        definition = {
            "name": self.name,
            "model": self.model,
            "instructions": self.instructions,
            "tools": [t.spec() for t in self.tools],
            "handoffs": [h.spec() | {"agent": h.agent} for h in self.handoffs],
            "max_turns": self.max_turns,
            "max_tokens": self.max_tokens,
            "max_cost": self.max_cost,
            "model_settings": self.model_settings,
            "prompt": f"{self.prompt.__module__}.{self.prompt.__qualname__}" if self.prompt else None,
            "label": label,
        }
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()
        return f"{label[:40]}-{digest[:12]}" if label else digest[:16]

    @property
    def workflow(self) -> registry.Workflow:
        return registry.Workflow(
            self.name, self.version, self.run, self.description, input_example={"message": "Hello"}
        )

    def first_message(self, input: Any) -> str:
        if self.prompt is not None:
            return str(self.prompt(input))
        if isinstance(input, str) and input.strip():
            return input
        if isinstance(input, dict) and isinstance(input.get("message"), str) and input["message"].strip():
            return str(input["message"])
        got = short(dumps(input), 120)
        raise InvalidInput(f'agent {self.name!r} takes {{"message": "..."}} as its input, got {got}')

    def run(self, ctx: Context, input: Any) -> dict[str, Any]:
        """The workflow function: the agent loop, every effect a journal entry."""
        return AgentRun(self, ctx, input).run()


def _handoff(target: Agent | str) -> Handoff:
    name = target.name if isinstance(target, Agent) else str(target)
    tool_name = "transfer_to_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:52]
    about = f": {target.description}" if isinstance(target, Agent) and target.description else ""
    return Handoff(
        agent=name,
        tool_name=tool_name,
        description=f"Hand the request to the {name} agent{about}. It answers with its result.",
        target=target if isinstance(target, Agent) else None,
    )


class AgentRun:
    """One replay of an agent run: the conversation is rebuilt in memory from the journal's outputs."""

    def __init__(self, agent: Agent, ctx: Context, input: Any):
        self.agent = agent
        self.ctx = ctx
        self.input = input
        self.messages: list[dict[str, Any]] = []
        self.new_messages: list[dict[str, Any]] = []  # since the last model call
        self.builds_on: list[int] = []  # seq numbers of the steps the next model call continues from
        self.turns = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0

    def run(self) -> dict[str, Any]:
        self._add({"role": "user", "content": self.agent.first_message(self.input)}, None)
        while True:
            reply = self.call_model()
            calls = reply["message"].get("tool_calls") or []
            if not calls:
                return self.result(reply["message"].get("content") or "")
            self.check_budget([str(c.get("name")) for c in calls])
            decisions = self.ask_approvals(calls)
            for index, call in enumerate(calls):
                self.call_tool(call, decisions.get(index))

    # -- model ---------------------------------------------------------------------------------------
    def call_model(self) -> dict[str, Any]:
        agent = self.agent
        turn = self.turns + 1
        seq = self.ctx.position
        timeout = agent.timeout or float(providers.agent_settings().get("TIMEOUT_SECONDS", 60))
        sent: dict[str, Any] = {"turn": turn, "builds_on": self.builds_on, "new_messages": self.new_messages}
        if turn == 1:
            sent["instructions"] = agent.instructions
            sent["tools"] = [t["name"] for t in agent.model_tools]
        sent["timeout_s"] = timeout
        request = ModelRequest(
            model=agent.model.partition(":")[2],
            instructions=agent.instructions,
            messages=self.messages,
            tools=agent.model_tools,
            settings=agent.model_settings,
            timeout=timeout,
            turn=turn,
        )

        def call(_sent: dict[str, Any]) -> dict[str, Any]:
            return call_model(agent.model, request)

        reply: dict[str, Any] = self.ctx.step(call, sent, name=agent.model, kind="llm", retry=agent.retry)
        self.turns = turn
        self.input_tokens += int(reply["usage"]["input_tokens"])
        self.output_tokens += int(reply["usage"]["output_tokens"])
        self.cost += float(reply["cost_usd"])
        self.messages.append(reply["message"])
        self.new_messages, self.builds_on = [], [seq]
        return reply

    def check_budget(self, wanted: list[str]) -> None:
        """Before more work: a spent budget stops the run with the reason (tools asked for not run)."""
        agent, spent = self.agent, None
        if self.turns >= agent.max_turns:
            spent = f"reached max_turns={agent.max_turns}"
        elif agent.max_tokens is not None and self.input_tokens + self.output_tokens >= agent.max_tokens:
            spent = f"used {self.input_tokens + self.output_tokens} tokens of max_tokens={agent.max_tokens}"
        elif agent.max_cost is not None and self.cost >= agent.max_cost:
            spent = f"spent ${self.cost:.6f} of max_cost=${agent.max_cost}"
        if spent:
            raise BudgetExceeded(
                f"agent {agent.name!r} {spent} after {self.turns} model calls without a final answer "
                f"(it still asked for: {', '.join(wanted)})"
            )

    # -- tools and handoffs ------------------------------------------------------------------------------
    def ask_approvals(self, calls: list[dict[str, Any]]) -> dict[int, Any]:
        """The gated calls of one response are asked for together: each approval is pending, and
        decided, on its own; the run waits (no worker) until all are decided."""
        gated: list[tuple[int, dict[str, Any]]] = []
        for index, call in enumerate(calls):
            name, arguments = str(call.get("name") or ""), call.get("arguments")
            tool_def = self.agent.tools_by_name.get(name)
            if tool_def is None or self.refusal(name, arguments, tool_def.parameters):
                continue  # refused calls are recorded as failed tool steps, never sent to reviewers
            policy = tool_def.approval_for(arguments)
            if policy is not None:
                gated.append((index, {
                    "tool": name, "arguments": arguments, "policy": policy, "schema": tool_def.parameters,
                    "summary": f"{self.agent.name} wants to call {name}",
                }))
        if not gated:
            return {}
        decided = self.ctx.approvals([request for _, request in gated], name="approval")
        return {index: decision for (index, _), decision in zip(gated, decided, strict=True)}

    def call_tool(self, call: dict[str, Any], decision: Any = None) -> None:
        name = str(call.get("name") or "")
        seq = self.ctx.position
        handoff = self.agent.handoffs_by_tool.get(name)
        content, is_error = (self.hand_off(handoff, call) if handoff else self.run_tool(name, call, decision))
        message: dict[str, Any] = {"role": "tool", "tool_call_id": call.get("id") or "", "name": name,
                                   "content": content}
        if is_error:
            message["is_error"] = True
        self._add(message, seq)

    def run_tool(self, name: str, call: dict[str, Any], decision: Any = None) -> tuple[str, bool]:
        arguments: Any = call.get("arguments")
        step_input: dict[str, Any] = {"call_id": call.get("id"), "arguments": arguments}
        tool_def = self.agent.tools_by_name.get(name)
        problem = self.refusal(name, arguments, tool_def.parameters if tool_def else None)
        if problem or tool_def is None:
            return self.refuse(name, step_input, problem or "")
        if decision is not None:
            if not decision.approved:
                # the reviewer's reason is the tool's result: the model can explain or try otherwise
                who = decision.decided_by or decision.how or "policy"
                return f"not approved ({who}): {decision.reason or 'rejected'}", True
            decision.verify(name, decision.arguments)  # only the approved call, bound by hash
            arguments = decision.arguments
            step_input["arguments"] = arguments
            step_input["approved_by"] = decision.decided_by or decision.how
            if arguments != call.get("arguments"):
                step_input["proposed_arguments"] = call.get("arguments")
        agent_name, run_input = self.agent.name, self.input

        def body(_input: dict[str, Any]) -> Any:
            return run_tool(tool_def, arguments, agent_name, run_input)

        try:
            output = self.ctx.step(
                body, step_input, name=name, kind="tool", retry=tool_def.retry,
                transactional=tool_def.transactional, at_most_once=tool_def.at_most_once,
            )
        except StepFailed as exc:
            return f"error: {exception_text(exc.error)}", True
        return (output if isinstance(output, str) else dumps(output)), False

    def hand_off(self, handoff: Handoff, call: dict[str, Any]) -> tuple[str, bool]:
        arguments: Any = call.get("arguments")
        problem = self.refusal(handoff.tool_name, arguments, HANDOFF_PARAMETERS)
        if problem:
            return self.refuse(handoff.tool_name, {"call_id": call.get("id"), "arguments": arguments}, problem)
        child_input = {"message": arguments["message"], "handoff_from": self.agent.name}
        try:
            output = self.ctx.child(handoff.agent, child_input, name=f"handoff:{handoff.agent}", kind="handoff")
        except StepFailed as exc:
            return f"error: the {handoff.agent} agent did not finish: {exception_text(exc.error)}", True
        if isinstance(output, dict) and isinstance(output.get("output"), str):
            return output["output"], False
        return dumps(output), False

    def refusal(self, name: str, arguments: Any, schema: dict[str, Any] | None) -> str:
        if schema is None:
            known = ", ".join(t["name"] for t in self.agent.model_tools) or "none"
            return f"unknown tool {name!r}: agent {self.agent.name!r} has the tools {known}"
        if not isinstance(arguments, dict):
            return f"the arguments of {name} are not a JSON object: {short(str(arguments), 200)}"
        errors = validate(arguments, schema)
        return f"invalid arguments for {name}: {'; '.join(errors)}" if errors else ""

    def refuse(self, name: str, step_input: dict[str, Any], problem: str) -> tuple[str, bool]:
        """Record a call the agent does not make as a failed tool step; the model sees why."""

        def refused(_input: dict[str, Any]) -> None:
            raise ToolCallRefused(problem)

        try:
            self.ctx.step(refused, step_input, name=name or "(no name)", kind="tool", retry=NO_RETRY)
        except StepFailed as exc:
            return f"error: {exception_text(exc.error)}", True
        raise AssertionError("a refused tool call cannot succeed")  # pragma: no cover

    # -- conversation --------------------------------------------------------------------------------
    def _add(self, message: dict[str, Any], seq: int | None) -> None:
        self.messages.append(message)
        self.new_messages.append(message)
        if seq is not None:
            self.builds_on.append(seq)

    def result(self, text: str) -> dict[str, Any]:
        return {
            "output": text,
            "agent": self.agent.name,
            "turns": self.turns,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            "cost_usd": round(self.cost, 8),
        }


def call_model(model: str, request: ModelRequest) -> dict[str, Any]:
    """The body of an llm step: one provider call, and what the journal keeps of it."""
    started = time.perf_counter()
    response = providers.complete(model, request)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    message: dict[str, Any] = {"role": "assistant", "content": response.text}
    if response.tool_calls:
        message["tool_calls"] = response.tool_calls
    return {
        "message": message,
        "usage": {"input_tokens": response.input_tokens, "output_tokens": response.output_tokens},
        "latency_ms": latency_ms,
        "cost_usd": providers.cost_usd(model, response.input_tokens, response.output_tokens),
        "stop_reason": response.stop_reason,
        "model": response.model,
        "response_id": response.response_id,
    }


def exception_text(error: str) -> str:
    """The exception of a recorded traceback (its last, unindented lines), without module paths."""
    lines = error.rstrip().splitlines()
    tail: list[str] = []
    for line in reversed(lines):
        if line.startswith((" ", "\t", "Traceback")):
            break
        tail.insert(0, line)
    text = "\n".join(tail) or (lines[-1] if lines else "error")
    text = re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=\w+:)", "", text)  # durable.agents.ToolCallRefused -> ToolCallRefused
    return text.removeprefix("ToolCallRefused: ")


# -- registration ----------------------------------------------------------------------------------------


def register(agent: Agent) -> Agent:
    """Register an agent (and the agents it hands off to) as workflows. Re-registering replaces it."""
    registry.register(agent.workflow)
    for handoff in agent.handoffs:
        if handoff.target is not None:
            register(handoff.target)
    return agent


def agent_of(definition: registry.Workflow) -> Agent | None:
    owner = getattr(definition.fn, "__self__", None)
    return owner if isinstance(owner, Agent) else None


def all_agents() -> list[Agent]:
    return [a for a in (agent_of(w) for w in registry.all_workflows()) if a is not None]


def get(name: str) -> Agent:
    try:
        found = agent_of(registry.get(name))
    except DurableError:
        found = None
    if found is None:
        raise UnknownAgent(name)
    return found


def start(agent: Agent | str, message: str, *, idempotency_key: str | None = None, user: Any = None) -> Run:
    """Start a run of a registered agent with a user message."""
    name = get(agent.name if isinstance(agent, Agent) else agent).name
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput("the message for an agent must be a non-empty string")
    return control.start(name, {"message": message}, idempotency_key=idempotency_key, user=user)
