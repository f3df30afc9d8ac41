"""Shared fixtures. Fast tests drive runs in-process with `drain`; crash tests start real workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from durable import executor, registry
from durable.models import Run, Status


@pytest.fixture
def workflows() -> Iterator[list[str]]:
    """Names registered by the test; unregistered afterwards so tests stay independent."""
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


@pytest.fixture
def define(workflows: list[str]) -> Any:
    """`@define("name")` registers an inline workflow for one test."""

    def decorator(name: str, version: str = "1") -> Any:
        def register(fn: Any) -> Any:
            workflows.append(name)
            return registry.workflow(name, version=version)(fn)

        return register

    return decorator


def drain(run_id: int, *, max_slices: int = 100) -> Run:
    """Drive a run in this process until it is no longer queued (finished, waiting, paused...)."""
    for _ in range(max_slices):
        run = Run.objects.get(pk=run_id)
        if run.status != Status.QUEUED:
            return run
        executor.drive(run_id)
    raise AssertionError(f"run {run_id} still queued after {max_slices} slices")


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing() -> Iterator[None]:
    """Django 6 hashes passwords with 1.2M PBKDF2 rounds (about a second each); tests need speed."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield
