"""Workflows for the crash tests, and the fault hooks a worker installs from its environment.

Workers started by `tests.chaos.run_worker` import this module, and so does the test process (to
start runs). Each step body appends its idempotency key ("<run>:<seq>") to the run's effects file: an
external side effect the tests count.

Fault hooks, only in a worker whose environment asks for them:
- CHAOS_KILL_AFTER_CHECKPOINT=<seq>: SIGKILL the worker's whole process tree right after the
  checkpoint of step <seq> commits, before the worker starts the next step or acks its task (FI-06).
- CHAOS_KILL_AFTER_FINISH=1: the same right after the run's outcome commits, before django-q2 acks
  the task that drove it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from django.db import transaction

from durable import executor
from durable.context import NO_RETRY, Context, current_step
from durable.models import StepStatus
from durable.registry import workflow


def touch(effects: str) -> str:
    """The step's external effect: append its idempotency key to the effects file."""
    step = current_step()
    assert step is not None, "touch() runs inside a step"
    with open(effects, "a", encoding="utf-8") as out:
        out.write(f"{step.idempotency_key}\n")
    return step.idempotency_key


def gated(effects: str, gate: str) -> str:
    """Fails until the gate file exists (someone fixed what the step depends on)."""
    key = touch(effects)
    if not Path(gate).exists():
        raise RuntimeError(f"gate {gate} is closed")
    return key


def poison(effects: str, gate: str) -> str:
    """Kills the django-q2 worker process running it, every time, until the gate file exists."""
    key = touch(effects)
    if not Path(gate).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return key


def charge(effects: str, hold: str) -> str:
    """A non-idempotent external effect (say, a payment), then a wait while the hold file exists: the
    test kills the worker after the effect and before the step's outcome is recorded."""
    key = touch(effects)
    deadline = time.monotonic() + 30
    while Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return key


@workflow("chaos.charge")
def charge_workflow(ctx: Context, input: dict[str, Any]) -> list[str]:
    """A step, an at-most-once step (never re-run after a crash: a person decides), a step."""
    first = ctx.step(touch, input["effects"], name="prepare")
    charged = ctx.step(charge, input["effects"], input["hold"], name="charge", at_most_once=True)
    receipt = ctx.step(touch, input["effects"], name="receipt")
    return [first, charged, receipt]


@workflow("chaos.gated")
def gated_workflow(ctx: Context, input: dict[str, Any]) -> list[str]:
    """A step, then a step that fails (no retries) while a gate file is missing."""
    first = ctx.step(touch, input["effects"], name="prepare")
    second = ctx.step(gated, input["effects"], input["gate"], name="gated", retry=NO_RETRY)
    return [first, second]


@workflow("chaos.sleeper")
def sleeper_workflow(ctx: Context, input: dict[str, Any]) -> list[str]:
    """A step, a durable sleep, a step."""
    before = ctx.step(touch, input["effects"], name="before")
    ctx.sleep(float(input["seconds"]))
    after = ctx.step(touch, input["effects"], name="after")
    return [before, after]


@workflow("chaos.poison")
def poison_workflow(ctx: Context, input: dict[str, Any]) -> list[str]:
    """A step, then a step that SIGKILLs its own worker process while the gate file is missing."""
    first = ctx.step(touch, input["effects"], name="prepare")
    second = ctx.step(poison, input["effects"], input["gate"], name="poison", retry=NO_RETRY)
    return [first, second]


def _kill_my_worker() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _install_fault_hooks() -> None:
    after_seq = os.environ.get("CHAOS_KILL_AFTER_CHECKPOINT")
    if after_seq is not None:
        checkpoint = Context._checkpoint

        def checkpoint_then_die(
            self: Context, seq: int, name: str, kind: str, status: str, *args: Any, **kwargs: Any
        ) -> None:
            checkpoint(self, seq, name, kind, status, *args, **kwargs)
            if seq == int(after_seq) and status == StepStatus.COMPLETED:
                transaction.on_commit(
                    _kill_my_worker
                )  # at once, unless an outer transaction is open

        Context._checkpoint = checkpoint_then_die  # type: ignore[method-assign]

    if os.environ.get("CHAOS_KILL_AFTER_FINISH"):
        finish = executor.finish

        def finish_then_die(*args: Any, **kwargs: Any) -> None:
            finish(*args, **kwargs)
            transaction.on_commit(_kill_my_worker)

        executor.finish = finish_then_die


_install_fault_hooks()
