"""Fixtures and builders shared by the run browser's tests (imported by each test module).

The fixed cast: anonymous, nobody (logged in, no permission), operator, reviewer, runadmin, staff.
Runs are built straight in the database (no worker) unless a test needs the engine itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from durable.models import Event, Run, Status, Step, StepStatus
from runs.roles import OPERATORS, REVIEWERS, RUN_ADMINS

ROLES = ("anonymous", "nobody", "operator", "reviewer", "runadmin", "staff")
PASSWORD = "pw-for-tests-only"


def make_user(username: str, groups: tuple[str, ...] = (), *, staff: bool = False) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=staff, is_superuser=staff)
    user.groups.set([Group.objects.get(name=name) for name in groups])
    return user


@pytest.fixture
def users(db: Any) -> dict[str, User | None]:
    return {
        "anonymous": None,
        "nobody": make_user("nobody"),
        "operator": make_user("operator", (OPERATORS,)),
        "reviewer": make_user("reviewer", (REVIEWERS,)),
        "runadmin": make_user("runadmin", (RUN_ADMINS,)),
        "staff": make_user("staff", staff=True),
    }


@pytest.fixture
def client_for(users: dict[str, User | None]) -> Callable[..., Client]:
    def make(role: str, **kwargs: Any) -> Client:
        client = Client(**kwargs)
        if users[role] is not None:
            client.force_login(users[role])
        return client

    return make


def make_run(
    *,
    workflow: str = "demo.analysis",
    status: str = Status.RUNNING,
    steps: int = 0,
    input: Any = None,
    output: Any = None,
    error: str = "",
    step_error: str = "",
    created_at: dt.datetime | None = None,
    started_by: User | None = None,
    parent: Run | None = None,
    events: bool = True,
    **fields: Any,
) -> Run:
    """A run with `steps` completed steps (and their events) written directly, as a worker would."""
    start = created_at or timezone.now() - dt.timedelta(seconds=steps + 1)
    finished = start + dt.timedelta(seconds=steps + 0.5) if status in (Status.SUCCEEDED, Status.FAILED) else None
    run = Run.objects.create(
        workflow=workflow, workflow_version="1", status=status, input=input if input is not None else {"n": steps},
        output=output, error=error, started_by=started_by, parent=parent, next_seq=steps,
        started_at=start, finished_at=finished, **({"lease_epoch": 1, "claims": 1} | fields),
    )
    Run.objects.filter(pk=run.pk).update(created_at=start)
    run.refresh_from_db()
    Step.objects.bulk_create(
        Step(
            run=run, seq=i, name=f"step_{i}", kind="step",
            status=StepStatus.FAILED if step_error and i == steps - 1 else StepStatus.COMPLETED,
            input={"args": [i]}, output={"value": i}, error=step_error if i == steps - 1 else "",
            attempts=1, epoch=1, worker="host:1", started_at=start + dt.timedelta(seconds=i),
            finished_at=start + dt.timedelta(seconds=i, milliseconds=800),
        )
        for i in range(steps)
    )
    if events:
        rows = [Event(run=run, seq=1, type="run.created", data={"workflow": workflow, "version": "1"})]
        rows += [
            Event(run=run, seq=2 + i, type="step.completed",
                  data={"seq": i, "name": f"step_{i}", "kind": "step", "status": "completed", "attempts": 1, "ms": 800})
            for i in range(steps)
        ]
        Event.objects.bulk_create(rows)
        Run.objects.filter(pk=run.pk).update(event_seq=len(rows))
        run.refresh_from_db()
    return run


@pytest.fixture(scope="session", autouse=True)
def _end_stray_sessions(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Websocket consumers read through worker threads (database_sync_to_async) whose persistent
    connections PostgreSQL counts as users of the test database; end them before it is dropped."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
