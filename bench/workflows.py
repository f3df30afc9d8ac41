"""Workflows the engine benchmark runs. Imported by bench/engine.py and by its worker processes.

In-process measurements read `PROBE`: the workflow appends `time.perf_counter()` marks (and the
commit counters of this thread's connection, when the harness installed them) around its steps.
Worker processes never have a probe installed, so there the marks cost one attribute test.
"""

from __future__ import annotations

import time
from typing import Any

from durable.registry import workflow


class Probe:
    """Timing marks of the workflow the harness is driving in this process."""

    def __init__(self, counters: Any = None, every_step: bool = False):
        self.counters = counters  # callable returning a tuple of counters, or None
        self.every_step = every_step
        self.marks: list[float] = []
        self.counts: list[tuple[int, ...]] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())
        if self.counters is not None:
            self.counts.append(self.counters())


PROBE: Probe | None = None


def _mark() -> None:
    if PROBE is not None:
        PROBE.mark()


def _step_mark() -> None:
    if PROBE is not None and PROBE.every_step:
        PROBE.marks.append(time.perf_counter())


def noop() -> None:
    return None


@workflow("bench.noop", version="1")
def bench_noop(ctx: Any, input: dict[str, Any]) -> int:
    """N sequential no-op steps."""
    steps = int(input.get("steps", 10))
    step = ctx.step
    _mark()
    for _ in range(steps):
        step(noop, name="noop")
        _step_mark()
    _mark()
    return steps


@workflow("bench.payload", version="1")
def bench_payload(ctx: Any, input: dict[str, Any]) -> int:
    """N sequential steps, each returning a string of `size` bytes (a new value every step)."""
    steps = int(input.get("steps", 10))
    size = int(input.get("size", 200))
    base = "x" * max(0, size - 8)
    _mark()
    for i in range(steps):
        value = f"{i:08d}{base}"
        ctx.step(lambda value=value: value, name="payload")
    _mark()
    return steps


def _history(total_bytes: int, message_bytes: int = 200) -> list[dict[str, str]]:
    """A conversation of ~200-byte messages adding up to about `total_bytes` of JSON."""
    count = max(1, total_bytes // message_bytes)
    text = "m" * (message_bytes - 40)
    return [{"role": "user" if i % 2 else "assistant", "content": f"{i:06d} {text}"} for i in range(count)]


def reply(history: list[dict[str, str]]) -> dict[str, str]:
    """A model call stand-in: reads the conversation, answers with one ~200-byte message."""
    return {"role": "assistant", "content": f"{len(history):06d} " + "r" * 160}


@workflow("bench.conversation", version="1")
def bench_conversation(ctx: Any, input: dict[str, Any]) -> int:
    """A conversation of `history` bytes is built by the first step (and so journaled); then N model
    steps each see the whole conversation and answer with one new ~200-byte message.

    "agent" (what durable.agents does): the step's recorded argument is only what is new since the
    previous model call (the last message and the step it builds on); the conversation itself
    reaches the body through the closure. "naive": the whole conversation is the step's argument,
    so the step's input record carries it every time (capped at 64 KB by describe_args)."""
    steps = int(input.get("steps", 10))
    naive = input.get("mode") == "naive"
    history = ctx.step(_history, int(input.get("history", 200)), name="history")
    _mark()
    for _ in range(steps):
        if naive:
            ctx.step(reply, history, name="reply")
        else:
            sent = {"builds_on": [ctx.position - 1], "new_messages": history[-1:]}
            ctx.step(lambda sent, history=history: reply(history), sent, name="reply")
    _mark()
    return steps


@workflow("bench.first", version="1")
def bench_first(ctx: Any, input: dict[str, Any]) -> float:
    """Records when its first step's body started (wall clock), for start-to-first-step latency."""
    return ctx.step(time.time, name="first")
