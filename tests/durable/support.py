"""Helpers for the fast engine tests: fake crashes and the passage of time by editing state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone
from django_q.models import OrmQ

from durable.models import Event, Run, Signal, Step, StepStatus

# The apps whose tables the engine tests write. Passed as `available_apps`, it limits the flush
# after each transactional test to these tables and skips re-creating every app's permissions
# (see also conftest._flush_engine_tables_with_delete).
ENGINE_APPS = ["durable", "django_q"]


class WorkerDied(BaseException):
    """Raised from a step body to stop the driver dead, as a SIGKILL would: nothing after it runs.

    A BaseException so that neither the step's error handling nor the driver's records anything.
    Follow it with `fake_crash(run_id)`: this process's heartbeat thread outlives the "dead" driver
    and may renew its lease once more, which a raised epoch refuses (an expired lease would not).
    """


def long_ago() -> Any:
    return timezone.now() - timedelta(hours=1)


def expire_lease(run_id: int) -> None:
    """The holder stopped renewing: its lease lapsed (well past, so no clock is close to it)."""
    Run.objects.filter(pk=run_id).update(lease_expires_at=long_ago())


def fake_crash(run_id: int, owner: str = "lost-host:4242") -> None:
    """As if another worker claimed the run (epoch + 1) and died holding it: lease expired."""
    Run.objects.filter(pk=run_id).update(
        status="running",
        lease_owner=owner,
        lease_epoch=F("lease_epoch") + 1,
        lease_expires_at=long_ago(),
    )


def make_due(run_id: int) -> None:
    """Time travel for a parked run: its timer (run and journal entry) is now in the past."""
    Run.objects.filter(pk=run_id).update(wake_at=long_ago())
    Step.objects.filter(run_id=run_id, status=StepStatus.WAITING).exclude(wake_at=None).update(
        wake_at=long_ago()
    )


def event_types(run_id: int) -> list[str]:
    return list(Event.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))


def events_of(run_id: int, kind: str) -> list[dict[str, Any]]:
    return list(
        Event.objects.filter(run_id=run_id, type=kind)
        .order_by("seq")
        .values_list("data", flat=True)
    )


def run_row(run_id: int) -> dict[str, Any]:
    return Run.objects.filter(pk=run_id).values().get()


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Everything the engine stores, to prove that a refused request changed nothing."""
    return {
        "runs": list(Run.objects.order_by("pk").values()),
        "steps": list(Step.objects.order_by("pk").values()),
        "events": list(Event.objects.order_by("pk").values()),
        "signals": list(Signal.objects.order_by("pk").values()),
        "queue": list(OrmQ.objects.order_by("pk").values("pk", "key")),
    }


def dispatches() -> int:
    """Tasks handed to django-q2 (ORM broker rows); nothing consumes them in the fast tests."""
    return OrmQ.objects.count()
