"""The OpenAI and Anthropic providers, through their official clients, against fake servers on
loopback: tool calls, rate limits with Retry-After, server errors, timeouts, malformed bodies, missing
and leaked API keys. Each failure is a recorded step error; none hangs a run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps

from durable import control
from durable.agents import Agent
from durable.context import RetryPolicy
from durable.models import Event, Status
from durable.tools import tool
from tests.agents.conftest import drain_tree
from tests.agents.fakes import (
    FakeModelServer,
    Reply,
    anthropic_error,
    anthropic_reply,
    openai_error,
    openai_reply,
    serving,
)

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = RetryPolicy(max_attempts=3, backoff=0.01, jitter=0)
SECRET = {"openai": "sk-test-OPENAI-5ecret-do-not-store-0123456789",
          "anthropic": "sk-ant-test-ANTHROPIC-5ecret-do-not-store-0123456789"}


@dataclass
class Wire:
    """What differs between the two APIs, for the tests both share."""

    name: str
    reply: Callable[..., Reply]
    error: Callable[..., Reply]
    key_env: str
    url_setting: str
    path: str

    @property
    def model(self) -> str:
        return f"{self.name}:fake-model"


WIRES = {
    "openai": Wire("openai", openai_reply, openai_error, "OPENAI_API_KEY", "OPENAI_BASE_URL", "/v1/chat/completions"),
    "anthropic": Wire("anthropic", anthropic_reply, anthropic_error, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                      "/v1/messages"),
}


@tool
def get_weather(city: str) -> dict[str, Any]:
    """Today's weather in a city.

    Args:
        city: the city's name
    """
    return {"city": city, "sky": "clear", "celsius": 21}


@pytest.fixture(params=sorted(WIRES))
def wire(request: pytest.FixtureRequest) -> Wire:
    return WIRES[request.param]


@pytest.fixture
def server(wire: Wire, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModelServer]:
    with serving() as fake:
        base = fake.url + ("/v1" if wire.name == "openai" else "")
        settings.DURABLE_AGENTS = {**settings.DURABLE_AGENTS, wire.url_setting: base,
                                   "PRICES": {wire.model: {"input": 1000.0, "output": 2000.0}}}
        monkeypatch.setenv(wire.key_env, SECRET[wire.name])
        yield fake


@pytest.fixture
def weather_agent(register_agent: Any, wire: Wire) -> Callable[..., Agent]:
    def make(**options: Any) -> Agent:
        options.setdefault("retry", QUICK)
        return register_agent(Agent("t.weather", wire.model, "You report the weather.", tools=[get_weather], **options))

    return make


def run_agent(message: str = "Weather in Lisbon?") -> Any:
    return drain_tree(control.start("t.weather", {"message": message}).pk)


def step_errors(run: Any) -> list[str]:
    return [e["error"] for e in Event.objects.filter(run=run, type="step.error").values_list("data", flat=True)]


def test_it_runs_tool_calls_through_the_real_client(wire, server, weather_agent):
    weather_agent()
    server.reply(
        wire.reply(None, [("call_a", "get_weather", {"city": "Lisbon"}), ("call_b", "get_weather", {"city": "Porto"})]),
        wire.reply("Clear skies in both."),
    )
    run = run_agent()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.output["output"] == "Clear skies in both."
    steps = list(run.steps.order_by("seq"))
    assert [(s.kind, s.name) for s in steps] == [
        ("llm", wire.model), ("tool", "get_weather"), ("tool", "get_weather"), ("llm", wire.model)]
    assert [s.output["city"] for s in steps[1:3]] == ["Lisbon", "Porto"]
    first = steps[0].output
    tokens = (first["usage"]["input_tokens"], first["usage"]["output_tokens"])
    assert tokens in {(11, 7), (13, 5)}
    assert first["cost_usd"] == pytest.approx((tokens[0] * 1000 + tokens[1] * 2000) / 1_000_000)
    assert first["latency_ms"] >= 0
    assert [r.path for r in server.requests] == [wire.path, wire.path]


@pytest.mark.parametrize("wire", ["openai"], indirect=True)
def test_it_speaks_the_openai_wire_format(server, weather_agent, wire):
    weather_agent(model_settings={"temperature": 0.2})
    server.reply(openai_reply(None, [("call_a", "get_weather", {"city": "Lisbon"})]), openai_reply("Clear."))
    run_agent()

    first, second = (r.json for r in server.requests)
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET['openai']}"
    assert first["model"] == "fake-model" and first["temperature"] == 0.2
    assert first["messages"] == [{"role": "system", "content": "You report the weather."},
                                 {"role": "user", "content": "Weather in Lisbon?"}]
    function = first["tools"][0]["function"]
    assert function["name"] == "get_weather" and function["parameters"]["required"] == ["city"]
    assistant, result = second["messages"][2:]
    assert assistant["tool_calls"][0]["id"] == "call_a"
    assert assistant["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}
    assert result["role"] == "tool" and result["tool_call_id"] == "call_a" and '"sky":"clear"' in result["content"]


@pytest.mark.parametrize("wire", ["anthropic"], indirect=True)
def test_it_speaks_the_anthropic_wire_format(server, weather_agent, wire):
    weather_agent(model_settings={"max_tokens": 300})
    server.reply(anthropic_reply("Let me look.", [("tu_1", "get_weather", {"city": "Lisbon"})]),
                 anthropic_reply("Clear."))
    run_agent()

    first, second = (r.json for r in server.requests)
    headers = server.requests[0].headers
    assert SECRET["anthropic"] in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert first["system"] == "You report the weather." and first["max_tokens"] == 300
    assert first["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Lisbon?"}]}]
    assert first["tools"][0]["name"] == "get_weather" and first["tools"][0]["input_schema"]["required"] == ["city"]
    assistant, results = second["messages"][1:]
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Lisbon"}},
    ]
    assert results["role"] == "user" and results["content"][0]["type"] == "tool_result"
    assert results["content"][0]["tool_use_id"] == "tu_1"


def test_it_waits_as_long_as_a_rate_limits_retry_after_says(wire, server, weather_agent):
    weather_agent()
    server.reply(wire.error(429, "slow down", {"retry-after": "1"}), wire.reply("Sunny."))
    run = run_agent()

    assert run.status == Status.SUCCEEDED
    llm = run.steps.get(seq=0)
    assert llm.attempts == 2
    first, second = server.requests
    assert second.at - first.at >= 0.95  # honoured, not the 0.01 s backoff of the policy
    assert "HTTP 429" in step_errors(run)[0] and "slow down" in step_errors(run)[0]


def test_it_retries_a_server_error(wire, server, weather_agent):
    weather_agent()
    server.reply(wire.error(500, "upstream exploded"), wire.reply("Sunny."))
    run = run_agent()

    assert run.status == Status.SUCCEEDED
    assert run.steps.get(seq=0).attempts == 2
    assert "HTTP 500" in step_errors(run)[0]


def test_it_times_out_a_slow_call_and_tries_again(wire, server, weather_agent):
    weather_agent(timeout=0.3)
    slow = wire.reply("too late")
    slow.delay = 1.5
    server.reply(slow, wire.reply("Sunny."))
    run = run_agent()

    assert run.status == Status.SUCCEEDED
    assert run.output["output"] == "Sunny."
    assert "timed out after 0.3 s" in step_errors(run)[0]
    assert run.steps.get(seq=0).input["args"][0]["timeout_s"] == 0.3


@pytest.mark.parametrize("body", [b"{not json", b'{"unexpected": "shape"}', b"[]"])
def test_it_fails_the_run_with_the_reason_when_the_server_returns_garbage(wire, server, weather_agent, body):
    weather_agent(retry=RetryPolicy(max_attempts=2, backoff=0.01))
    server.reply(Reply(200, body), Reply(200, body))
    run = run_agent()

    assert run.status == Status.FAILED
    assert "malformed response" in run.error
    assert run.steps.get(seq=0).status == "failed"
    assert len(server.requests) == 2


def test_it_fails_at_once_on_a_bad_request(wire, server, weather_agent):
    weather_agent()
    server.reply(wire.error(400, "model does not exist"))
    run = run_agent()

    assert run.status == Status.FAILED
    assert "HTTP 400" in run.error and "model does not exist" in run.error
    assert run.steps.get(seq=0).attempts == 1


def test_it_fails_at_once_without_an_api_key(wire, server, weather_agent, monkeypatch):
    monkeypatch.delenv(wire.key_env)
    weather_agent()
    run = run_agent()

    assert run.status == Status.FAILED
    assert f"{wire.key_env} is not set" in run.error
    assert run.steps.get(seq=0).attempts == 1
    assert server.requests == []


def test_it_never_stores_the_api_key(wire, server, weather_agent, caplog):
    caplog.set_level(logging.DEBUG)
    weather_agent(retry=RetryPolicy(max_attempts=2, backoff=0.01))
    echo = f"Incorrect API key provided: {SECRET[wire.name]}"
    server.reply(
        wire.reply(None, [("call_a", "get_weather", {"city": "Lisbon"})]),
        wire.error(401, echo),  # a server that echoes the key in its error body
    )
    run = run_agent()
    assert run.status == Status.FAILED and "HTTP 401" in run.error and "[redacted]" in run.error
    server.reply(wire.reply("Sunny."))
    control.retry(run.pk)
    assert drain_tree(run.pk).status == Status.SUCCEEDED

    assert server.requests, "the key was used"
    secret = SECRET[wire.name]
    for model in apps.get_models():
        for row in model.objects.all().values():
            assert secret not in repr(row), f"the API key is stored in {model.__name__} {row.get('id')}"
    assert secret not in caplog.text
