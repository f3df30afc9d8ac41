"""Fixtures of the agent tests: agents and model scripts registered for one test, and a drain that
also drives the child runs of handoffs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from durable import agents, registry
from durable.models import TERMINAL, Run, Status
from durable.providers import scripted
from tests.conftest import drain
from tests.durable.conftest import _close_stray_connections  # noqa: F401  (the heartbeat's PostgreSQL session)


@pytest.fixture
def register_agent() -> Iterator[Any]:
    """`register_agent(Agent(...))` registers an agent (and its handoff targets) for one test."""
    names: list[str] = []

    def register(agent: agents.Agent) -> agents.Agent:
        agents.register(agent)
        names.append(agent.name)
        names.extend(h.agent for h in agent.handoffs if h.target is not None)
        return agent

    yield register
    for name in names:
        registry.unregister(name)


@pytest.fixture
def script() -> Iterator[Any]:
    """`script("name", [turn, ...])` registers a model script for one test; returns "scripted:t-name".
    (Prefixed, and any script of that name restored afterwards: the demo agents' scripts stay.)"""
    replaced: dict[str, Any] = {}

    def register(name: str, turns: Any) -> str:
        name = f"t-{name}"
        replaced.setdefault(name, scripted.get(name))
        scripted.register(name, turns)
        return f"scripted:{name}"

    yield register
    for name, previous in replaced.items():
        if previous is None:
            scripted.unregister(name)
        else:
            scripted.register(name, previous)


def drain_tree(run_id: int, *, rounds: int = 20) -> Run:
    """Drive a run and its child runs in this process until the run is no longer queued or waiting
    for a child."""
    for _ in range(rounds):
        run = drain(run_id)
        if run.status != Status.WAITING:
            return run
        children = Run.objects.filter(parent_id=run_id).exclude(status__in=TERMINAL)
        if not children:
            return run
        for child in children:
            drain_tree(child.pk, rounds=rounds)
    return Run.objects.get(pk=run_id)
