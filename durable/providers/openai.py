"""OpenAI chat completions with tools ("openai:<model>"), through the official client.

Works with any OpenAI-compatible server: the base URL comes from settings.DURABLE_AGENTS
["OPENAI_BASE_URL"] or the OPENAI_BASE_URL environment variable. The client's own retries are off
(max_retries=0): the step retries, so every attempt is recorded and Retry-After is honoured durably.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import openai as openai_sdk

from durable.journal import dumps
from durable.providers import (
    ModelRequest,
    ModelResponse,
    ProviderError,
    api_key,
    base_url,
    retry_after_seconds,
    scrub,
    short,
)

_clients: dict[tuple[int, str | None, str], openai_sdk.OpenAI] = {}
_lock = threading.Lock()


def complete(request: ModelRequest) -> ModelResponse:
    key = api_key("OPENAI_API_KEY")
    client = _client(base_url("OPENAI_BASE_URL"), key)
    kwargs: dict[str, Any] = {
        "model": request.model,
        "messages": to_openai(request.instructions, request.messages),
        "timeout": request.timeout,
    }
    if request.tools:
        kwargs["tools"] = [
            {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["parameters"]}}
            for t in request.tools
        ]
    if request.settings:
        kwargs["extra_body"] = dict(request.settings)
    data = sdk_call("openai", openai_sdk, openai_sdk.OpenAIError,
                    lambda: client.chat.completions.create(**kwargs), request.timeout, key)
    return parse_completion(data)


def sdk_call(provider: str, sdk: Any, base_error: type[Exception], call: Any, timeout: float, key: str) -> Any:
    """One request through an official client, as plain data; every client error becomes a
    ProviderError that says what happened (the openai and anthropic clients share these error names)."""
    try:
        result = call()
        return result.model_dump() if hasattr(result, "model_dump") else result
    except sdk.APITimeoutError:
        raise ProviderError(f"{provider}: the request timed out after {timeout:g} s") from None
    except sdk.APIConnectionError as exc:
        raise ProviderError(scrub(f"{provider}: cannot reach the server: {short(str(exc))}", key)) from None
    except sdk.APIStatusError as exc:
        raise status_error(provider, exc.status_code, str(exc.message), exc.response.headers, key) from None
    except (ValueError, sdk.APIResponseValidationError) as exc:
        raise ProviderError(scrub(f"{provider}: malformed response: {short(str(exc))}", key)) from None
    except base_error as exc:
        raise ProviderError(scrub(f"{provider}: {type(exc).__name__}: {short(str(exc))}", key)) from None


def status_error(provider: str, status: int, message: str, headers: Any, key: str) -> ProviderError:
    """An HTTP error status as a ProviderError: rate limits, timeouts and server errors are retried."""
    retryable = status in (408, 409, 429) or status >= 500
    hint = {401: " (check the API key)", 403: " (check the API key's permissions)",
            404: " (check the model name and base URL)"}.get(status, "")
    return ProviderError(
        scrub(f"{provider}: HTTP {status}{hint}: {short(message)}", key),
        retryable=retryable,
        retry_after=retry_after_seconds(headers) if retryable else None,
        status=status,
    )


def to_openai(instructions: str, messages: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for message in messages:
        role = message["role"]
        if role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None}
            calls = message.get("tool_calls") or []
            if calls:
                item["tool_calls"] = [
                    {"id": call["id"], "type": "function",
                     "function": {"name": call["name"], "arguments": _arguments_json(call["arguments"])}}
                    for call in calls
                ]
            out.append(item)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]})
        else:
            out.append({"role": role, "content": message["content"]})
    return out


def _arguments_json(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else dumps(arguments)


def parse_completion(data: Any) -> ModelResponse:
    """The neutral response of a chat completion body; a body of another shape is a ProviderError."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError(f"openai: malformed response: no choices in {short(json.dumps(data, default=str), 200)}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ProviderError("openai: malformed response: the first choice has no message")
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = (call or {}).get("function") or {}
        if not function.get("name"):
            raise ProviderError("openai: malformed response: a tool call without a function name")
        calls.append({
            "id": call.get("id") or f"call_{index}",
            "name": str(function["name"]),
            "arguments": parse_arguments(function.get("arguments")),
        })
    usage = data.get("usage") or {}
    return ModelResponse(
        text=str(message.get("content") or ""),
        tool_calls=calls,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        stop_reason=str(choices[0].get("finish_reason") or ""),
        model=str(data.get("model") or ""),
        response_id=str(data.get("id") or ""),
    )


def parse_arguments(raw: Any) -> Any:
    """A tool call's arguments: the parsed JSON object, or the raw text when it is not one (the
    agent then tells the model its arguments were not valid JSON)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return str(raw)
    return value if isinstance(value, dict) else str(raw)


def _client(url: str | None, key: str) -> openai_sdk.OpenAI:
    # One client per process (django-q2 forks workers; a connection pool must not cross a fork),
    # base URL and key. The key lives only here, in memory.
    cache_key = (os.getpid(), url, key)
    with _lock:
        client = _clients.get(cache_key)
        if client is None:
            client = openai_sdk.OpenAI(api_key=key, base_url=url, max_retries=0)
            _clients[cache_key] = client
        return client
