"""The agent loop as durable steps, with scripted models: what is journaled, replay, tool modes,
refused tool calls, budgets, retries, versions and definition changes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import transaction

from durable import agents, control, current_step, registry
from durable.agents import Agent, BudgetExceeded, UnknownAgent
from durable.context import RetryPolicy
from durable.errors import UnknownWorkflow
from durable.models import Event, Run, Status, StepStatus
from durable.providers import ModelRequest
from durable.recovery import sweep
from durable.tools import ToolContext, tool
from tests.agents.conftest import drain_tree
from tests.durable.support import WorkerDied, expire_lease

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = RetryPolicy(max_attempts=4, backoff=0.01, jitter=0)
SEEN: dict[str, Any] = {}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def whoami(context: ToolContext) -> dict[str, Any]:
    """The step's idempotency key, two ways."""
    step = current_step()
    return {"context": context.idempotency_key, "current_step": step.idempotency_key if step else None,
            "run": context.run_id, "input": context.input}


def calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": args} for name, args in calls]}


def start(name: str = "t.agent", message: str = "go") -> Run:
    return drain_tree(control.start(name, {"message": message}).pk)


def tool_messages(run: Run, seq: int) -> list[dict[str, Any]]:
    """The tool results an llm step was sent (its new messages)."""
    return [m for m in run.steps.get(seq=seq).input["args"][0]["new_messages"] if m["role"] == "tool"]


# -- what is journaled ------------------------------------------------------------------------------------


def test_it_makes_each_model_call_and_each_tool_call_its_own_step(register_agent, script):
    model = script("two-calls", [calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})), {"text": "3 and 7"}])
    register_agent(Agent("t.agent", model, "Add.", tools=[add]))
    run = start()

    assert run.status == Status.SUCCEEDED
    assert [(s.seq, s.kind, s.name, s.output if s.kind == "tool" else None) for s in run.steps.order_by("seq")] == [
        (0, "llm", model, None), (1, "tool", "add", 3), (2, "tool", "add", 7), (3, "llm", model, None)]
    assert run.output == {"output": "3 and 7", "agent": "t.agent", "turns": 2, "cost_usd": 0.0,
                          "usage": run.output["usage"]}
    llm = run.steps.get(seq=0).output
    assert set(llm) >= {"message", "usage", "latency_ms", "cost_usd"}
    last = run.steps.get(seq=3).output
    assert run.output["usage"]["input_tokens"] == llm["usage"]["input_tokens"] + last["usage"]["input_tokens"]


def test_it_sends_a_model_step_only_what_is_new_and_references_to_the_rest(register_agent, script):
    turns = [calls(("add", {"a": i, "b": i})) for i in range(6)] + [{"text": "done"}]
    register_agent(Agent("t.agent", script("six", turns), "Add.", tools=[add]))
    run = start(message="start adding")

    llm_inputs = [s.input["args"][0] for s in run.steps.filter(kind="llm").order_by("seq")]
    assert llm_inputs[0]["builds_on"] == []
    assert llm_inputs[0]["new_messages"] == [{"role": "user", "content": "start adding"}]
    for turn, sent in enumerate(llm_inputs[1:], start=2):
        llm_seq = 2 * (turn - 2)
        assert sent["turn"] == turn
        assert sent["builds_on"] == [llm_seq, llm_seq + 1]  # the previous model call and its tool call
        assert [m["role"] for m in sent["new_messages"]] == ["tool"]
        assert "instructions" not in sent
    sizes = {len(str(sent)) for sent in llm_inputs[2:]}
    assert max(sizes) - min(sizes) < 10, "a model step's input does not grow with the conversation"


def test_it_rebuilds_the_conversation_on_replay_without_calling_the_model_again(register_agent, script):
    model_calls: Counter[int] = Counter()
    conversations: list[int] = []

    def model(request: ModelRequest) -> dict[str, Any]:
        model_calls[request.turn] += 1
        conversations.append(len(request.messages))
        return calls(("flaky", {"n": request.turn})) if request.turn < 3 else {"text": "ok"}

    runs: Counter[int] = Counter()

    @tool
    def flaky(n: int) -> int:
        """Dies the first time it sees n=2, like a worker killed mid-call."""
        runs[n] += 1
        if n == 2 and runs[n] == 1:
            raise WorkerDied()
        return n

    register_agent(Agent("t.agent", script("replay", model), tools=[flaky]))
    run = control.start("t.agent", {"message": "go"})
    with pytest.raises(WorkerDied):
        drain_tree(run.pk)
    expire_lease(run.pk)
    sweep()
    run = drain_tree(run.pk)

    assert run.status == Status.SUCCEEDED
    assert model_calls == {1: 1, 2: 1, 3: 1}, "recorded model calls came back from the journal"
    assert runs == {1: 1, 2: 2}, "only the tool call cut off ran again"
    assert conversations == [1, 3, 5], "the last call saw the whole conversation rebuilt from the journal"


def test_it_gives_a_tool_its_steps_idempotency_key(register_agent, script):
    register_agent(Agent("t.agent", script("key", [calls(("whoami", {})), {"text": "ok"}]), tools=[whoami]))
    run = start()

    output = run.steps.get(seq=1).output
    assert output == {"context": f"{run.pk}:1", "current_step": f"{run.pk}:1", "run": run.pk,
                      "input": {"message": "go"}}


def test_it_runs_a_transactional_tool_inside_the_checkpoint_transaction(register_agent, script):
    @tool(transactional=True)
    def create_group(name: str) -> dict[str, Any]:
        """Create a group."""
        SEEN["atomic"] = transaction.get_connection().in_atomic_block
        return {"id": Group.objects.create(name=name).pk}

    register_agent(Agent("t.agent", script("tx", [calls(("create_group", {"name": "g1"})), {"text": "ok"}]),
                         tools=[create_group]))
    run = start()

    assert run.status == Status.SUCCEEDED
    assert SEEN.pop("atomic") is True
    assert Group.objects.filter(name="g1").count() == 1


def test_it_stops_for_a_person_when_an_at_most_once_tool_was_cut_off(register_agent, script):
    sent: list[float] = []

    @tool(at_most_once=True)
    def send_payment(amount: float) -> str:
        """Send money once."""
        sent.append(amount)
        if len(sent) == 1:
            raise WorkerDied()
        return "sent"

    model = script("pay", [calls(("send_payment", {"amount": 5.0})), {"text": "paid"}])
    register_agent(Agent("t.agent", model, tools=[send_payment]))
    run = control.start("t.agent", {"message": "pay"})
    with pytest.raises(WorkerDied):
        drain_tree(run.pk)
    expire_lease(run.pk)
    sweep()

    assert drain_tree(run.pk).status == Status.OUTCOME_UNKNOWN
    assert sent == [5.0]
    control.resolve(run.pk, 1, happened=True, output="sent by hand")
    run = drain_tree(run.pk)
    assert run.status == Status.SUCCEEDED
    assert sent == [5.0], "a resolved call never runs again"
    assert tool_messages(run, 2)[0]["content"] == "sent by hand"


def test_it_asks_approval_only_for_the_calls_its_policy_selects(register_agent, script):
    from django.contrib.auth.models import Group, User

    from approvals import decisions
    from approvals.models import Approval
    from runs.roles import ensure_roles

    refunded = []

    @tool(requires_approval=lambda args: args["amount"] > 100)
    def refund(amount: float) -> str:
        """Refund an amount."""
        refunded.append(amount)
        return "refunded"

    model = script("refunds", [calls(("refund", {"amount": 500.0}), ("refund", {"amount": 5.0})), {"text": "ok"}])
    agent = register_agent(Agent("t.agent", model, tools=[refund]))
    run = start()
    assert agent.tools[0].spec()["requires_approval"].startswith("policy:")
    assert run.status == Status.WAITING_APPROVAL
    assert refunded == []
    approval = Approval.objects.get(run=run)
    assert approval.arguments == {"amount": 500.0}

    ensure_roles()
    reviewer = User.objects.create_user("rev")
    reviewer.groups.add(Group.objects.get(name="reviewers"))
    decisions.decide(approval_id=approval.pk, user=reviewer, approved=True, arguments={"amount": 120.0})
    run = drain_tree(run.pk)
    assert run.status == Status.SUCCEEDED
    assert refunded == [120.0, 5.0], "the edited arguments ran, the small refund needed no approval"
    first = run.steps.filter(kind="tool").order_by("seq").first()
    assert first.input["args"][0]["approved_by"] == "rev"
    assert first.input["args"][0]["proposed_arguments"] == {"amount": 500.0}


def test_it_gives_the_model_the_reviewers_reason_when_a_call_is_rejected(register_agent, script):
    from django.contrib.auth.models import Group, User

    from approvals import decisions
    from approvals.models import Approval
    from runs.roles import ensure_roles

    @tool(requires_approval=True)
    def refund(amount: float) -> str:
        """Refund an amount."""
        raise AssertionError("a rejected call never runs")

    model = script("refunds", [calls(("refund", {"amount": 500.0})), {"text": "sorry"}])
    register_agent(Agent("t.agent", model, tools=[refund]))
    run = start()
    ensure_roles()
    reviewer = User.objects.create_user("rev")
    reviewer.groups.add(Group.objects.get(name="reviewers"))
    decisions.decide(approval_id=Approval.objects.get(run=run).pk, user=reviewer, approved=False, reason="over limit")
    run = drain_tree(run.pk)
    assert run.status == Status.SUCCEEDED
    assert tool_messages(run, 2)[0]["content"] == "not approved (rev): over limit"


# -- bad input from the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("proposed, error", [
    (("subtract", {"a": 1}), "unknown tool 'subtract': agent 't.agent' has the tools add"),
    (("add", {"a": "one", "b": 2}), "invalid arguments for add: $.a: expected integer, got string ('one')"),
    (("add", {"a": 1}), "invalid arguments for add: $: missing required argument 'b'"),
    (("add", '{"a": 1, "b":'), "the arguments of add are not a JSON object: {\"a\": 1, \"b\":"),
])
def test_it_tells_the_model_about_a_call_it_refused_and_carries_on(register_agent, script, proposed, error):
    name, arguments = proposed
    model = script("refuse", [{"tool_calls": [{"name": name, "arguments": arguments}]}, {"text": "sorry"}])
    register_agent(Agent("t.agent", model, tools=[add]))
    run = start()

    assert run.status == Status.SUCCEEDED
    step = run.steps.get(seq=1)
    assert (step.kind, step.status, step.attempts) == ("tool", StepStatus.FAILED, 1)
    assert error in step.error
    assert tool_messages(run, 2) == [{"role": "tool", "tool_call_id": "call_1_0", "name": name,
                                      "content": f"error: {error}", "is_error": True}]


def test_it_tells_the_model_when_a_tool_raises_or_returns_what_json_cannot_hold(register_agent, script):
    @tool
    def explode() -> None:
        """Always fails."""
        raise LookupError("no such order\nsecond line")

    @tool
    def unserialisable() -> Any:
        """Returns a set."""
        return {1, 2}

    model = script("broken", [calls(("explode", {}), ("unserialisable", {})), {"text": "both broke"}])
    register_agent(Agent("t.agent", model, tools=[explode, unserialisable]))
    run = start()

    assert run.status == Status.SUCCEEDED
    first, second = tool_messages(run, 3)
    assert first["content"] == "error: LookupError: no such order\nsecond line"
    assert second["content"].startswith("error: NotSerializable: the result of step 2 'unserialisable'")


def test_it_fails_a_run_whose_input_has_no_message(register_agent, script):
    register_agent(Agent("t.agent", script("none", [{"text": "hi"}])))
    run = drain_tree(control.start("t.agent", {"question": "?"}).pk)

    assert run.status == Status.FAILED
    assert 'takes {"message": "..."} as its input' in run.error


# -- budgets and retries ----------------------------------------------------------------------------------------


def always_adding(request: ModelRequest) -> dict[str, Any]:
    return calls(("add", {"a": 1, "b": request.turn}))


@pytest.mark.parametrize("limits, reason", [
    ({"max_turns": 3}, "reached max_turns=3 after 3 model calls"),
    ({"max_tokens": 150}, "tokens of max_tokens=150"),
    ({"max_cost": 0.0001}, "of max_cost=$0.0001"),
])
def test_it_stops_a_run_cleanly_when_a_budget_is_spent(register_agent, script, settings, limits, reason):
    model = script("forever", always_adding)
    settings.DURABLE_AGENTS = {**settings.DURABLE_AGENTS, "PRICES": {model: {"input": 1.0, "output": 1.0}}}
    register_agent(Agent("t.agent", model, tools=[add], **limits))
    run = start()

    assert run.status == Status.FAILED
    assert f"{BudgetExceeded.__name__}: agent 't.agent' " in run.error and reason in run.error
    assert "it still asked for: add" in run.error
    last = run.steps.order_by("-seq").first()
    assert last.kind == "llm", "the tools of the last answer were not run"


def test_it_retries_rate_limits_and_server_errors_and_records_each(register_agent, script):
    model = script("flaky", [{"fail": [{"error": "rate_limit", "retry_after": 0.3}, "server", "timeout"],
                              "text": "finally"}])
    register_agent(Agent("t.agent", model, retry=QUICK))
    started = time.monotonic()
    run = start()

    assert run.status == Status.SUCCEEDED and run.output["output"] == "finally"
    assert time.monotonic() - started >= 0.3, "Retry-After was honoured"
    assert run.steps.get(seq=0).attempts == 4
    errors = [e["error"] for e in Event.objects.filter(run=run, type="step.error").values_list("data", flat=True)]
    assert [e.split(": ", 1)[1] for e in errors] == [
        "rate limited (HTTP 429): scripted", "server error (HTTP 500): scripted",
        "the model call timed out after 60 s (scripted)"]


def test_it_parks_a_run_for_a_long_retry_after(register_agent, script):
    model = script("slow-down", [{"fail": [{"error": "rate_limit", "retry_after": 120}], "text": "later"}])
    register_agent(Agent("t.agent", model, retry=QUICK))
    run = start()

    assert run.status == Status.WAITING
    assert 110 < (run.wake_at - run.updated_at).total_seconds() <= 121
    assert Event.objects.filter(run=run, type="run.backoff").exists()


def test_it_fails_at_once_on_an_error_not_worth_retrying(register_agent, script):
    register_agent(Agent("t.agent", script("bad", [{"fail": ["bad_request"]}]), retry=QUICK))
    run = start()

    assert run.status == Status.FAILED
    assert run.steps.get(seq=0).attempts == 1
    assert "bad request (HTTP 400)" in run.error


# -- handoffs ------------------------------------------------------------------------------------------------------


def test_it_hands_off_to_a_child_run_and_continues_with_its_result(register_agent, script):
    specialist = Agent("t.specialist", script("specialist", [calls(("add", {"a": 2, "b": 2})), {"text": "it is 4"}]),
                       tools=[add], description="adds numbers")
    model = script("triage", [calls(("transfer_to_t_specialist", {"message": "what is 2+2?"})),
                              {"text": "the specialist says it is 4"}])
    register_agent(Agent("t.agent", model, handoffs=[specialist]))
    run = start()

    assert run.status == Status.SUCCEEDED
    assert run.output["output"] == "the specialist says it is 4"
    handoff = run.steps.get(seq=1)
    assert (handoff.kind, handoff.name, handoff.status) == ("handoff", "handoff:t.specialist", StepStatus.COMPLETED)
    child = Run.objects.get(pk=handoff.input["run_id"])
    assert (child.parent_id, child.parent_seq, child.workflow) == (run.pk, 1, "t.specialist")
    assert child.input == {"message": "what is 2+2?", "handoff_from": "t.agent"}
    assert tool_messages(run, 2)[0]["content"] == "it is 4"


def test_it_tells_the_model_when_a_handoff_fails(register_agent, script):
    specialist = Agent("t.specialist", script("broken-specialist", [{"fail": ["bad_request"]}]))
    model = script("triage2", [calls(("transfer_to_t_specialist", {"message": "help"})), {"text": "could not"}])
    register_agent(Agent("t.agent", model, handoffs=[specialist]))
    run = start()

    assert run.status == Status.SUCCEEDED
    message = tool_messages(run, 2)[0]
    assert message["is_error"] and message["content"].startswith("error: the t.specialist agent did not finish")


# -- definitions: registration, versions, changes -------------------------------------------------------------------


def test_it_versions_an_agent_by_what_decides_its_behaviour(script):
    model = script("v", [{"text": "hi"}])
    base = Agent("t.v", model, "Be brief.", tools=[add])
    assert Agent("t.v", model, "Be brief.", tools=[add]).version == base.version
    for changed in (
        Agent("t.v", model, "Be verbose.", tools=[add]),
        Agent("t.v", model, "Be brief.", tools=[whoami]),
        Agent("t.v", "scripted:other", "Be brief.", tools=[add]),
        Agent("t.v", model, "Be brief.", tools=[add], max_turns=3),
        Agent("t.v", model, "Be brief.", tools=[add], model_settings={"temperature": 0}),
    ):
        assert changed.version != base.version
    assert Agent("t.v", model, "Be brief.", version="2024-06").version.startswith("2024-06-")


def test_it_stops_a_run_whose_agent_changed_until_an_admin_resumes_it(register_agent, script):
    died: list[int] = []

    @tool
    def once() -> str:
        """Dies the first time."""
        died.append(1)
        if len(died) == 1:
            raise WorkerDied()
        return "ok"

    model = script("changing", [calls(("once", {})), {"text": "done"}])
    register_agent(Agent("t.agent", model, "Version one.", tools=[once]))
    run = control.start("t.agent", {"message": "go"})
    with pytest.raises(WorkerDied):
        drain_tree(run.pk)
    new = register_agent(Agent("t.agent", model, "Version two.", tools=[once]))
    expire_lease(run.pk)
    sweep()

    assert drain_tree(run.pk).status == Status.DEFINITION_CHANGED
    control.resume(run.pk)
    run = drain_tree(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.workflow_version == new.version


def test_it_refuses_an_unknown_agent_with_the_names_it_knows(register_agent, script):
    register_agent(Agent("t.agent", script("known", [{"text": "hi"}])))
    with pytest.raises(UnknownAgent, match=r"unknown agent 'nope' \(registered agents: .*t\.agent"):
        agents.start("nope", "hello")
    with pytest.raises(UnknownAgent):
        agents.start("demo.analysis", "a workflow, not an agent")
    with pytest.raises(UnknownWorkflow):
        control.start("nope", {"message": "hello"})
    with pytest.raises(ValueError, match="unknown model provider 'gpt'"):
        Agent("t.bad", "gpt:4")


def test_it_registers_an_agent_as_a_workflow_with_its_handoffs(register_agent, script):
    specialist = Agent("t.specialist", script("s", [{"text": "hi"}]))
    agent = register_agent(Agent("t.agent", script("a", [{"text": "hi"}]), handoffs=[specialist]))

    definition = registry.get("t.agent")
    assert (definition.version, agents.agent_of(definition)) == (agent.version, agent)
    assert agents.get("t.specialist") is specialist
    run = agents.start("t.agent", "hello")
    assert (run.workflow, run.workflow_version, run.input) == ("t.agent", agent.version, {"message": "hello"})
