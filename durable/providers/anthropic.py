"""Anthropic messages API with tools ("anthropic:<model>"), through the official client.

The base URL comes from settings.DURABLE_AGENTS["ANTHROPIC_BASE_URL"] or ANTHROPIC_BASE_URL; the
client's own retries are off (the step retries and records every attempt).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import anthropic as anthropic_sdk

from durable.providers import (
    ModelRequest,
    ModelResponse,
    ProviderError,
    api_key,
    base_url,
    short,
)
from durable.providers.openai import sdk_call

DEFAULT_MAX_TOKENS = 1024
_clients: dict[tuple[int, str | None, str], anthropic_sdk.Anthropic] = {}
_lock = threading.Lock()


def complete(request: ModelRequest) -> ModelResponse:
    key = api_key("ANTHROPIC_API_KEY")
    client = _client(base_url("ANTHROPIC_BASE_URL"), key)
    extra = dict(request.settings)
    kwargs: dict[str, Any] = {
        "model": request.model,
        "max_tokens": int(extra.pop("max_tokens", DEFAULT_MAX_TOKENS)),
        "messages": to_anthropic(request.messages),
        "timeout": request.timeout,
    }
    if request.instructions:
        kwargs["system"] = request.instructions
    if request.tools:
        kwargs["tools"] = [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in request.tools
        ]
    if extra:
        kwargs["extra_body"] = extra
    data = sdk_call("anthropic", anthropic_sdk, anthropic_sdk.AnthropicError,
                    lambda: client.messages.create(**kwargs), request.timeout, key)
    return parse_message(data)


def to_anthropic(messages: Any) -> list[dict[str, Any]]:
    """Neutral messages as Anthropic's: tool results are user content blocks, and consecutive user
    turns are merged (the API wants user and assistant to alternate)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.get("content"):
                blocks.append({"type": "text", "text": message["content"]})
            for call in message.get("tool_calls") or []:
                arguments = call["arguments"]
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"],
                               "input": arguments if isinstance(arguments, dict) else {"_raw": arguments}})
            out.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(no answer)"}]})
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]}
            if message.get("is_error"):
                block["is_error"] = True
        else:
            block = {"type": "text", "text": message["content"]}
        if out and out[-1]["role"] == "user":
            out[-1]["content"].append(block)
        else:
            out.append({"role": "user", "content": [block]})
    return out


def parse_message(data: Any) -> ModelResponse:
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise ProviderError(f"anthropic: malformed response: no content in {short(json.dumps(data, default=str), 200)}")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = (block or {}).get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            if not block.get("name"):
                raise ProviderError("anthropic: malformed response: a tool_use block without a name")
            arguments = block.get("input")
            calls.append({"id": str(block.get("id") or f"toolu_{len(calls)}"), "name": str(block["name"]),
                          "arguments": arguments if isinstance(arguments, dict) else str(arguments)})
    usage = data.get("usage") or {}
    return ModelResponse(
        text="".join(texts),
        tool_calls=calls,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        stop_reason=str(data.get("stop_reason") or ""),
        model=str(data.get("model") or ""),
        response_id=str(data.get("id") or ""),
    )


def _client(url: str | None, key: str) -> anthropic_sdk.Anthropic:
    cache_key = (os.getpid(), url, key)  # per process: a connection pool must not cross a fork
    with _lock:
        client = _clients.get(cache_key)
        if client is None:
            client = anthropic_sdk.Anthropic(api_key=key, base_url=url, max_retries=0)
            _clients[cache_key] = client
        return client
