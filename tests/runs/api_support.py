"""Fixtures and builders for the JSON API tests (imported by each tests/runs/test_api*.py module).

The fixed cast: anonymous, nobody (no permission), operator (view), runadmin (view + control), staff
(superuser). Each has a token; `api_client(role)` sends it as a bearer token.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from durable.models import Event, Run, Signal, Status, Step, StepStatus
from runs.models import ApiToken
from runs.roles import OPERATORS, RUN_ADMINS

API_ROLES = ("anonymous", "nobody", "operator", "runadmin", "staff")


def make_user(username: str, groups: tuple[str, ...] = (), *, staff: bool = False) -> User:
    user = User.objects.create_user(username, password="pw-for-tests-only", is_staff=staff, is_superuser=staff)
    user.groups.set([Group.objects.get(name=name) for name in groups])
    return user


@pytest.fixture
def cast(db: Any) -> dict[str, User | None]:
    return {
        "anonymous": None,
        "nobody": make_user("nobody"),
        "operator": make_user("operator", (OPERATORS,)),
        "runadmin": make_user("runadmin", (OPERATORS, RUN_ADMINS)),
        "staff": make_user("staff", staff=True),
    }


@pytest.fixture
def tokens(cast: dict[str, User | None]) -> dict[str, str]:
    return {role: ApiToken.objects.create_token(user, "tests")[1] for role, user in cast.items() if user is not None}


@pytest.fixture
def api_client(tokens: dict[str, str]) -> Callable[[str], Client]:
    """A client that authenticates with the role's bearer token (anonymous: no header)."""

    def make(role: str, **kwargs: Any) -> Client:
        if role in tokens:
            kwargs["HTTP_AUTHORIZATION"] = f"Bearer {tokens[role]}"
        return Client(**kwargs)

    return make


def make_run(
    *,
    workflow: str = "demo.analysis",
    status: str = Status.RUNNING,
    steps: int = 0,
    created_at: dt.datetime | None = None,
    started_by: User | None = None,
    input: Any = None,
) -> Run:
    """A run with `steps` completed steps and one event per step, written as a worker would."""
    created = created_at or timezone.now()
    finished = created + dt.timedelta(seconds=steps + 1) if status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED) else None
    run = Run.objects.create(
        workflow=workflow, workflow_version="1", status=status, input={"n": steps} if input is None else input,
        started_by=started_by, next_seq=steps, started_at=created, finished_at=finished, lease_epoch=1, claims=1,
        error="boom" if status == Status.FAILED else "",
    )
    Run.objects.filter(pk=run.pk).update(created_at=created)
    Step.objects.bulk_create(
        Step(run=run, seq=i, name=f"step_{i}", kind="step", status=StepStatus.COMPLETED, input={"args": [i]},
             output={"value": i}, attempts=1, epoch=1, worker="host:1", started_at=created + dt.timedelta(seconds=i),
             finished_at=created + dt.timedelta(seconds=i, milliseconds=500))
        for i in range(steps)
    )
    events = [Event(run=run, seq=1, type="run.created", data={"workflow": workflow})]
    events += [Event(run=run, seq=2 + i, type="step.completed", data={"seq": i}) for i in range(steps)]
    Event.objects.bulk_create(events)
    Run.objects.filter(pk=run.pk).update(event_seq=len(events))
    run.refresh_from_db()
    return run


def snapshot() -> tuple[Any, ...]:
    """Everything the API could change, to assert that a refused request changed nothing."""
    return (
        list(Run.objects.order_by("pk").values_list("pk", "status", "event_seq", "next_seq", "lease_epoch", "updated_at")),
        Event.objects.count(),
        Step.objects.count(),
        Signal.objects.count(),
    )


def body(response: Any) -> Any:
    return json.loads(response.content)


def stream_text(response: Any) -> str:
    """The whole body of a finished SSE response (the sync test client drains its async iterator)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "StreamingHttpResponse must consume")
        return b"".join(response).decode()


@pytest.fixture(scope="session", autouse=True)
def _close_listeners(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Long-poll and SSE waiters hold a LISTEN connection (runs.listen) and read through worker
    threads with their own connections; end them before PostgreSQL drops the test database."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
