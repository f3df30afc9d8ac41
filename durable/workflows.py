"""Built-in workflows: `demo.analysis` imitates a long analysis job (the crash tests use it)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from durable.context import Context, current_step
from durable.errors import InvalidInput
from durable.registry import workflow


def analyse_chunk(index: int, step_ms: int, effects_file: str | None) -> dict[str, Any]:
    """One chunk of work: takes `step_ms` ms, then appends the step's idempotency key to the effects
    file, an external side effect anyone can count."""
    deadline = time.monotonic() + step_ms / 1000
    digest = hashlib.sha256(str(index).encode())  # the result depends on the chunk alone
    while time.monotonic() < deadline:
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    if effects_file:
        step = current_step()
        key = step.idempotency_key if step else f"chunk-{index}"
        with open(effects_file, "a", encoding="utf-8") as effects:
            effects.write(f"{key}\n")
    return {"chunk": index, "score": int(digest.hexdigest()[:6], 16) % 1000}


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["score"] for r in results]
    return {"chunks": len(scores), "total": sum(scores), "max": max(scores, default=None)}


@workflow(
    "demo.analysis",
    version="1",
    input_example={"chunks": 20, "step_ms": 200, "effects_file": None},
)
def analysis(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Analyse N data chunks one step at a time, then aggregate them."""
    if not isinstance(input, dict):
        raise InvalidInput("demo.analysis takes a JSON object: {\"chunks\": N, \"step_ms\": M}")
    chunks = int(input.get("chunks", 5))
    step_ms = int(input.get("step_ms", 200))
    effects_file = input.get("effects_file")
    results = [ctx.step(analyse_chunk, i, step_ms, effects_file, name="analyse_chunk") for i in range(chunks)]
    return ctx.step(aggregate, results, name="aggregate")


from durable import demo_agents  # noqa: E402, F401  (registers the demo agents; imports this module)
