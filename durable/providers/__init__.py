"""Model providers behind one small interface, chosen by the model string's prefix:

    "scripted:<script>"          durable.providers.scripted   deterministic, for demos and tests
    "openai:<model>"             durable.providers.openai     chat completions, any OpenAI-compatible server
    "anthropic:<model>"          durable.providers.anthropic  the messages API

A provider module has `complete(request: ModelRequest) -> ModelResponse`. It raises ProviderError
for everything that went wrong; `retryable` and `retry_after` tell the step's retry loop what to do
(the engine honours both). Conversations are passed in one neutral message format:

    {"role": "user", "content": "..."}
    {"role": "assistant", "content": "...", "tool_calls": [{"id": "...", "name": "...", "arguments": {...}}]}
    {"role": "tool", "tool_call_id": "...", "name": "...", "content": "...", "is_error": false}

API keys come only from the environment or settings.DURABLE_AGENTS, are read when a call is made,
and never enter a request record, a step, an event, a task or a log line (errors are scrubbed).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any

from django.conf import settings

Message = dict[str, Any]

PROVIDERS = {
    "scripted": "durable.providers.scripted",
    "openai": "durable.providers.openai",
    "anthropic": "durable.providers.anthropic",
}


@dataclass(frozen=True)
class ModelRequest:
    model: str  # the name after the provider prefix
    instructions: str
    messages: Sequence[Message]  # the whole conversation; held in memory, never journaled whole
    tools: Sequence[dict[str, Any]] = ()  # [{"name", "description", "parameters"}]
    settings: Mapping[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    timeout: float = 60.0
    turn: int = 1  # the agent's model call number, counted from 1


@dataclass
class ModelResponse:
    text: str
    tool_calls: list[dict[str, Any]]  # [{"id", "name", "arguments": dict, or str when not JSON}]
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str = ""
    model: str = ""  # the model that answered, as the server names it
    response_id: str = ""


class ProviderError(Exception):
    """A model call that failed. `retryable = False` fails the step at once (a bad request, a missing
    key); `retry_after` (seconds) is when the server said to try again."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


def agent_settings() -> dict[str, Any]:
    return dict(getattr(settings, "DURABLE_AGENTS", {}))


def split_model(model: str) -> tuple[str, str]:
    """"openai:gpt-4o-mini" -> ("openai", "gpt-4o-mini"); refuses unknown providers clearly."""
    prefix, sep, name = model.partition(":")
    if not sep or not name:
        raise ValueError(f"model {model!r} must look like 'provider:name' (providers: {', '.join(PROVIDERS)})")
    if prefix not in PROVIDERS:
        raise ValueError(f"unknown model provider {prefix!r} in {model!r} (providers: {', '.join(PROVIDERS)})")
    return prefix, name


def provider_module(model: str) -> ModuleType:
    prefix, _ = split_model(model)
    return importlib.import_module(PROVIDERS[prefix])


def complete(model: str, request: ModelRequest) -> ModelResponse:
    return provider_module(model).complete(request)  # type: ignore[no-any-return]


def api_key(name: str) -> str:
    """The key from settings.DURABLE_AGENTS or the environment, or a non-retryable error."""
    key = agent_settings().get(name) or os.environ.get(name, "")
    if not key:
        raise ProviderError(
            f"{name} is not set: put the API key in the environment (or settings.DURABLE_AGENTS[{name!r}]) "
            "of the worker processes",
            retryable=False,
        )
    return str(key)


def base_url(name: str) -> str | None:
    return agent_settings().get(name) or os.environ.get(name) or None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    """Price of one call from settings.DURABLE_AGENTS["PRICES"] (USD per million tokens, by full
    model string or bare model name); 0 for a model not in the table."""
    prices: Mapping[str, Mapping[str, float]] = agent_settings().get("PRICES", {})
    price = prices.get(model) or prices.get(model.partition(":")[2]) or {}
    total = input_tokens * float(price.get("input", 0)) + output_tokens * float(price.get("output", 0))
    return round(total / 1_000_000, 8)


def scrub(text: str, secret: str) -> str:
    """Error text from a server may echo the key (a 401 body); it must not reach the journal."""
    if secret and len(secret) >= 8:
        text = text.replace(secret, "[redacted]")
    return text


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), capped by
    DURABLE_AGENTS["MAX_RETRY_AFTER_SECONDS"]."""
    if not headers:
        return None
    cap = float(agent_settings().get("MAX_RETRY_AFTER_SECONDS", 600))
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000
        elif raw is not None:
            value = float(raw)
    except ValueError:
        try:
            value = parsedate_to_datetime(str(raw)).timestamp() - time.time()
        except (TypeError, ValueError):
            value = None
    if value is None:
        return None
    return min(max(value, 0.0), cap)


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
