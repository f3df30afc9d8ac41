"""`durable seed`: historical runs in bulk, consistent journals, nothing dispatched."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count
from django.utils import timezone
from django_q.models import OrmQ

from durable.models import TERMINAL, Event, Run, Status, Step, StepStatus
from durable.seed import seed

pytestmark = pytest.mark.django_db


def test_it_creates_the_requested_runs_and_the_long_run() -> None:
    result = seed(300, steps_run=120, batch_size=64)
    assert Run.objects.count() == 301 == len(result.run_ids)
    big = Run.objects.get(pk=result.big_run_id)
    assert big.steps.count() == 120 == big.next_seq
    assert list(big.steps.order_by("seq").values_list("seq", flat=True)) == list(range(120))
    assert big.status == Status.SUCCEEDED
    assert Step.objects.count() == result.steps and Event.objects.count() == result.events


def test_it_seeds_only_finished_or_paused_runs_and_dispatches_nothing() -> None:
    queued_tasks = OrmQ.objects.count()
    seed(200)
    statuses = set(Run.objects.values_list("status", flat=True))
    assert statuses <= {*TERMINAL, Status.PAUSED}
    assert len(statuses) >= 3  # a mix
    assert OrmQ.objects.count() == queued_tasks
    assert not Run.objects.exclude(lease_owner="").exists()
    assert not Run.objects.filter(lease_expires_at__isnull=False).exists()


def test_it_writes_consistent_journals() -> None:
    seed(150)
    for run in Run.objects.annotate(n_events=Count("events", distinct=True), n_steps=Count("steps", distinct=True)):
        assert run.n_events == run.event_seq
        assert run.n_steps == run.next_seq
        assert list(run.events.order_by("seq").values_list("seq", flat=True)) == list(range(1, run.event_seq + 1))
        assert (run.finished_at is None) == (run.status == Status.PAUSED)
        if run.status == Status.FAILED:
            assert run.steps.order_by("-seq").first().status == StepStatus.FAILED
            assert run.error
        if run.status == Status.SUCCEEDED:
            assert run.output is not None


def test_it_spreads_runs_over_the_past_days_and_never_the_future() -> None:
    seed(100, steps_run=50, days=30)
    now = timezone.now()
    assert not Run.objects.filter(created_at__lt=now - dt.timedelta(days=31)).exists()
    assert not Run.objects.filter(created_at__gt=now).exists()
    assert not Run.objects.filter(finished_at__gt=now).exists()
    assert not Step.objects.filter(finished_at__gt=now).exists()


def test_it_makes_varied_searchable_runs() -> None:
    seed(300)
    assert Run.objects.values("workflow").distinct().count() >= 4
    assert Run.objects.values("started_by").distinct().count() >= 4
    assert Run.objects.filter(input__subject__icontains="refund").exists()
    # Some runs share a created_at, as rows inserted by one statement do.
    assert Run.objects.values("created_at").annotate(n=Count("id")).filter(n__gt=1).exists()
    ordered = list(Run.objects.order_by("created_at", "id").values_list("id", flat=True))
    assert ordered == sorted(ordered)  # ids follow creation time


def test_the_command_prints_progress_and_the_ids() -> None:
    out = StringIO()
    call_command("durable", "seed", "--runs", "40", "--steps-run", "25", "--batch-size", "16", stdout=out)
    text = out.getvalue()
    pks = list(Run.objects.order_by("pk").values_list("pk", flat=True))
    first, last = pks[0], pks[-1]
    assert "seeded 16/40 runs" in text and "seeded 40/40 runs" in text
    assert "created 41 runs" in text
    assert f"run ids: {first}-{last}" in text
    assert f"run with 25 steps: {last}" in text
    assert Run.objects.get(pk=last).steps.count() == 25


def test_the_command_refuses_negative_counts() -> None:
    with pytest.raises(CommandError):
        call_command("durable", "seed", "--runs", "-1")
    assert not Run.objects.exists()
