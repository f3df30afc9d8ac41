"""Fake model servers on loopback speaking the OpenAI chat completions and Anthropic messages wire
formats, so the official clients are tested for real (HTTP, headers, JSON) without a network.

A server answers each request with `responder(request) -> Reply`; by default the replies queued with
`server.reply(...)`, in order. It records every request and counts requests per distinct body (the
crash tests check that no recorded model call was sent twice).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (sent as JSON) or bytes (sent as they are)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server; the client times out)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeModelServer:
    def __init__(self, responder: Callable[[Request], Reply] | None = None):
        self.requests: list[Request] = []
        self.body_counts: Counter[str] = Counter()
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self.responder = responder or self._next_queued
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with server._lock:
                    server.requests.append(request)
                    server.body_counts[hashlib.sha256(body).hexdigest()] += 1
                reply = server.responder(request)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-model-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next_queued(self, request: Request) -> Reply:
        with self._lock:
            if not self._queue:
                return Reply(500, {"error": {"message": "the fake server has no reply queued"}})
            return self._queue.pop(0)


@contextmanager
def serving(responder: Callable[[Request], Reply] | None = None) -> Iterator[FakeModelServer]:
    server = FakeModelServer(responder).start()
    try:
        yield server
    finally:
        server.stop()


# -- OpenAI chat completions ------------------------------------------------------------------------------


def openai_reply(text: str | None = None, calls: list[tuple[str, str, Any]] = (), *,  # type: ignore[assignment]
                 prompt_tokens: int = 11, completion_tokens: int = 7, model: str = "fake-gpt") -> Reply:
    """A chat completion: text, and tool calls as (id, name, arguments: dict or raw JSON text)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for call_id, name, args in calls
        ]
    return Reply(200, {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def openai_error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Reply:
    kind = {429: "rate_limit_exceeded", 500: "server_error", 401: "invalid_api_key"}.get(status, "invalid_request")
    return Reply(status, {"error": {"message": message, "type": kind, "code": kind}}, headers or {})


# -- Anthropic messages -------------------------------------------------------------------------------------


def anthropic_reply(text: str | None = None, calls: list[tuple[str, str, Any]] = (), *,  # type: ignore[assignment]
                    input_tokens: int = 13, output_tokens: int = 5, model: str = "fake-claude") -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": call_id, "name": name, "input": args} for call_id, name, args in calls]
    return Reply(200, {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })


def anthropic_error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Reply:
    kind = {429: "rate_limit_error", 500: "api_error", 401: "authentication_error"}.get(status, "invalid_request_error")
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}}, headers or {})
