"""The sweeper: expired leases, crash loops, lost dispatches; never a live owner's run."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from durable import control, executor
from durable.models import Run, Status
from durable.recovery import sweep
from tests.conftest import drain
from tests.durable.support import (
    ENGINE_APPS,
    WorkerDied,
    dispatches,
    event_types,
    events_of,
    expire_lease,
    fake_crash,
    long_ago,
    run_row,
)

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)


@pytest.fixture
def three_steps(define, calls):
    @define("recovery.three")
    def wf(ctx, input):
        return [ctx.step(lambda n=n: calls.update([n]) or n, name=n) for n in ("a", "b", "c")]

    return "recovery.three"


@pytest.fixture
def crashes_in_b(define, calls):
    """Step a completes; the worker dies inside b on the first call."""

    @define("recovery.crash_in_b")
    def wf(ctx, input):
        def b():
            calls.update(["b"])
            if calls["b"] == 1:
                raise WorkerDied()
            return "b"

        return [ctx.step(lambda: calls.update(["a"]) or "a", name="a"), ctx.step(b, name="b")]

    return "recovery.crash_in_b"


def test_it_queues_a_run_whose_lease_expired_again_with_a_higher_epoch(three_steps):
    run = control.start(three_steps)
    lease = executor.claim(run.pk)
    expire_lease(run.pk)

    assert sweep().recovered == 1
    row = run_row(run.pk)
    assert row["status"] == Status.QUEUED
    assert row["lease_epoch"] == lease.epoch + 1
    assert row["lease_owner"] == ""
    assert row["recoveries"] == 1


def test_it_records_the_previous_owner_and_the_step_when_it_recovers_a_run(crashes_in_b):
    run = control.start(crashes_in_b)
    with pytest.raises(WorkerDied):
        executor.drive(run.pk)
    fake_crash(run.pk, owner="host-a:123")
    sweep()

    [recovered] = events_of(run.pk, "run.recovered")
    assert recovered["previous_owner"] == "host-a:123"
    assert recovered["at_step"] == 1
    assert recovered["epoch"] == 2


def test_it_dispatches_a_recovered_run_to_a_worker(three_steps):
    run = control.start(three_steps)
    executor.claim(run.pk)
    expire_lease(run.pk)
    before = dispatches()

    sweep()
    assert dispatches() == before + 1


def test_it_finishes_a_recovered_run_from_the_step_where_the_worker_died(crashes_in_b, calls):
    run = control.start(crashes_in_b)
    with pytest.raises(WorkerDied):
        executor.drive(run.pk)
    fake_crash(run.pk)
    assert sweep().recovered == 1

    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert calls == {"a": 1, "b": 2}
    [a_epoch, b_epoch] = run.steps.order_by("seq").values_list("epoch", flat=True)
    assert b_epoch == run.lease_epoch > a_epoch


def test_it_dead_letters_a_run_after_max_recoveries_without_a_checkpoint(
    three_steps, durable_settings
):
    durable_settings(MAX_RECOVERIES=3)
    run = control.start(three_steps)

    for _ in range(2):
        executor.claim(run.pk)
        expire_lease(run.pk)
        assert sweep().recovered == 1
    executor.claim(run.pk)
    expire_lease(run.pk)

    assert sweep().dead == 1
    row = run_row(run.pk)
    assert row["status"] == Status.DEAD
    assert row["lease_owner"] == ""
    assert event_types(run.pk)[-1] == "run.dead_lettered"
    assert events_of(run.pk, "run.dead_lettered")[0]["stalls"] == 3


def test_it_does_not_dispatch_a_dead_lettered_run(three_steps, durable_settings):
    durable_settings(MAX_RECOVERIES=1)
    run = control.start(three_steps)
    executor.claim(run.pk)
    expire_lease(run.pk)
    before = dispatches()

    sweep()
    assert dispatches() == before
    assert executor.drive(run.pk) == "not claimed"


def test_it_counts_only_crashes_since_the_last_checkpoint_towards_dead_lettering(
    define, calls, durable_settings
):
    durable_settings(MAX_RECOVERIES=2)

    @define("recovery.progressing")
    def wf(ctx, input):
        def step(name):
            calls.update([name])
            if calls[name] == 1:
                raise WorkerDied()  # each step kills its first worker, each after progress
            return name

        return [ctx.step(step, n, name=n) for n in ("a", "b", "c")]

    run = control.start("recovery.progressing")
    for _ in range(3):
        with pytest.raises(WorkerDied):
            executor.drive(run.pk)
        fake_crash(run.pk)
        assert sweep().recovered == 1

    assert drain(run.pk).status == Status.SUCCEEDED


def test_it_runs_a_dead_lettered_run_again_when_resumed(three_steps, calls, durable_settings):
    durable_settings(MAX_RECOVERIES=1)
    run = control.start(three_steps)
    executor.claim(run.pk)
    expire_lease(run.pk)
    sweep()

    assert control.resume(run.pk) == Status.QUEUED
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert calls == {"a": 1, "b": 1, "c": 1}


def test_it_runs_a_dead_lettered_run_again_when_retried(three_steps, durable_settings):
    durable_settings(MAX_RECOVERIES=1)
    run = control.start(three_steps)
    executor.claim(run.pk)
    expire_lease(run.pk)
    sweep()

    assert control.retry(run.pk) == Status.QUEUED
    assert drain(run.pk).status == Status.SUCCEEDED


def test_it_parks_a_pausing_run_whose_worker_died_as_paused(three_steps):
    run = control.start(three_steps)
    executor.claim(run.pk)
    control.pause(run.pk)
    expire_lease(run.pk)

    assert sweep().recovered == 1
    assert run_row(run.pk)["status"] == Status.PAUSED


def test_it_stops_renewing_the_lease_of_a_step_that_runs_past_the_step_timeout(
    three_steps, durable_settings
):
    durable_settings(STEP_TIMEOUT_SECONDS=60)
    run = control.start(three_steps)
    lease = executor.claim(run.pk)
    expire_lease(run.pk)
    lease.step_started = time.monotonic() - 61  # a hung step: the worker is alive but stuck

    executor.heartbeat.beat(lease)
    assert sweep().recovered == 1


def test_it_renews_the_lease_of_a_step_within_the_step_timeout(three_steps, durable_settings):
    durable_settings(STEP_TIMEOUT_SECONDS=60)
    run = control.start(three_steps)
    lease = executor.claim(run.pk)
    expire_lease(run.pk)
    lease.step_started = time.monotonic() - 30

    executor.heartbeat.beat(lease)
    assert not sweep()
    assert run_row(run.pk)["lease_expires_at"] > timezone.now()


def test_it_dispatches_again_a_queued_run_no_worker_took_in_time(three_steps):
    run = control.start(three_steps)
    Run.objects.filter(pk=run.pk).update(dispatched_at=long_ago())
    before = dispatches()

    assert sweep().redispatched == 1
    assert dispatches() == before + 1
    assert run_row(run.pk)["dispatched_at"] > timezone.now() - timedelta(minutes=1)


def test_it_leaves_a_recently_dispatched_queued_run_alone(three_steps):
    control.start(three_steps)
    before = dispatches()

    assert sweep().redispatched == 0
    assert dispatches() == before


def test_it_does_not_touch_a_run_whose_owner_holds_a_live_lease(three_steps):
    run = control.start(three_steps)
    executor.claim(run.pk)
    before = run_row(run.pk)

    assert not sweep()
    assert run_row(run.pk) == before


def test_it_does_not_recover_a_run_that_was_claimed_again_after_the_sweeper_read_it(
    three_steps, monkeypatch
):
    from durable import recovery

    run = control.start(three_steps)
    executor.claim(run.pk)
    fake_crash(run.pk)
    real_select = recovery._select

    def read_then_lose_the_race(sql, params):
        rows = real_select(sql, params)
        if "lease_expires_at <" in sql:
            Run.objects.filter(pk=run.pk).update(status="queued")  # another sweeper recovered it
            executor.claim(run.pk)  # and a live worker claimed it (epoch + 1)
        return rows

    monkeypatch.setattr(recovery, "_select", read_then_lose_the_race)

    assert sweep().recovered == 0
    live = run_row(run.pk)
    assert live["status"] == Status.RUNNING
    assert live["lease_owner"] == executor.worker_id()
    assert "run.recovered" not in event_types(run.pk)


def test_it_skips_a_run_whose_row_a_frozen_session_holds_and_recovers_the_others(three_steps):
    """A worker frozen inside a transaction (SIGSTOP) holds its run's row lock: the sweeper must not
    wait on it with every other run's recovery stuck behind it (PostgreSQL; SQLite locks the file)."""
    import threading

    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer: a frozen writer stops every transaction, not one row")
    frozen, free = control.start(three_steps), control.start(three_steps)
    fake_crash(frozen.pk)
    fake_crash(free.pk)
    locked, release = threading.Event(), threading.Event()

    def freeze() -> None:
        with transaction.atomic():
            Run.objects.select_for_update().get(pk=frozen.pk)
            locked.set()
            release.wait(30)
        connections.close_all()

    holder = threading.Thread(target=freeze)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        result = sweep()
        assert time.monotonic() - started < 10
        assert result.recovered == 1
        assert run_row(free.pk)["status"] == Status.QUEUED
        assert run_row(frozen.pk)["status"] == Status.RUNNING
    finally:
        release.set()
        holder.join(30)
    assert sweep().recovered == 1
    assert run_row(frozen.pk)["status"] == Status.QUEUED


def test_it_has_postgresql_end_a_frozen_worker_sessions_transaction(settings):
    import copy

    from durable.worker import end_frozen_transactions

    settings.DATABASES = {"default": {**copy.deepcopy(settings.DATABASES["default"]),
                                      "ENGINE": "django.db.backends.postgresql", "OPTIONS": {}}}
    end_frozen_transactions()
    assert settings.DATABASES["default"]["OPTIONS"]["options"] == "-c idle_in_transaction_session_timeout=10000"
