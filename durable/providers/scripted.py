"""Scripted models ("scripted:<script>"): deterministic answers for demos, tests and benchmarks.

A script is a list of turns, or a function `(request) -> turn`. Turn n answers the agent's n-th model
call (`request.turn`), so every worker that replays or retries a run gets the same answer. A turn:

    {"text": "final answer"}
    {"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A-1"}}], "text": "optional"}
    {"fail": ["rate_limit", {"error": "server"}, ...]}   the first attempts of this call fail, in order:
        rate_limit (429, "retry_after": seconds), server (500), timeout, garbage (malformed response),
        bad_request (400, not retryable); an attempt past the list answers normally
    {"latency_ms": 50}                                   sleep before answering
    {"usage": {"input_tokens": 10, "output_tokens": 5}}  otherwise estimated

Register scripts with `register(name, script)` at import time of a discovered module (demo agents do),
so that every worker process knows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from durable.context import current_step
from durable.providers import ModelRequest, ModelResponse, ProviderError

Turn = dict[str, Any]
Script = list[Turn] | Callable[[ModelRequest], Turn]

_scripts: dict[str, Script] = {}


def register(name: str, script: Script) -> None:
    _scripts[name] = script


def unregister(name: str) -> None:
    _scripts.pop(name, None)


def get(name: str) -> Script | None:
    return _scripts.get(name)


def complete(request: ModelRequest) -> ModelResponse:
    script = _scripts.get(request.model)
    if script is None:
        known = ", ".join(sorted(_scripts)) or "none"
        raise ProviderError(f"no model script named {request.model!r} (scripts: {known})", retryable=False)
    if callable(script):
        turn = script(request)
    elif request.turn <= len(script):
        turn = script[request.turn - 1]
    else:
        raise ProviderError(
            f"model script {request.model!r} has {len(script)} turns; the agent asked for turn {request.turn}",
            retryable=False,
        )
    step = current_step()
    _fail_if_scripted(turn, step.attempt if step else 1, request)
    if turn.get("latency_ms"):
        time.sleep(float(turn["latency_ms"]) / 1000)
    return _response(turn, request)


def _fail_if_scripted(turn: Turn, attempt: int, request: ModelRequest) -> None:
    failures = turn.get("fail") or []
    if attempt > len(failures):
        return
    failure = failures[attempt - 1]
    spec = failure if isinstance(failure, dict) else {"error": failure}
    kind = spec.get("error", "server")
    if kind == "rate_limit":
        raise ProviderError("rate limited (HTTP 429): scripted", status=429, retry_after=spec.get("retry_after"))
    if kind == "server":
        raise ProviderError("server error (HTTP 500): scripted", status=500)
    if kind == "timeout":
        raise ProviderError(f"the model call timed out after {request.timeout:g} s (scripted)")
    if kind == "garbage":
        raise ProviderError("malformed response from the model: scripted garbage")
    if kind == "bad_request":
        raise ProviderError("bad request (HTTP 400): scripted", status=400, retryable=False)
    raise ProviderError(f"scripted failure {kind!r}", retryable=bool(spec.get("retryable", True)))


def _response(turn: Turn, request: ModelRequest) -> ModelResponse:
    text = str(turn.get("text") or "")
    calls = []
    for index, call in enumerate(turn.get("tool_calls") or []):
        calls.append({
            "id": call.get("id") or f"call_{request.turn}_{index}",
            "name": call["name"],
            "arguments": call.get("arguments", {}),
        })
    usage = turn.get("usage") or {}
    # An estimate that does not scan the conversation: a turn's cost must not grow with its history.
    input_tokens = int(usage.get("input_tokens", 20 * len(request.messages) + len(request.instructions) // 4))
    output_tokens = int(usage.get("output_tokens", len(text) // 4 + 12 * len(calls) + 1))
    return ModelResponse(
        text=text,
        tool_calls=calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        stop_reason="tool_calls" if calls else "stop",
        model=f"scripted:{request.model}",
        response_id=f"scripted-{request.turn}",
    )
