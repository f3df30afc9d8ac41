"""Claims: however many workers race for a queued run, exactly one gets it."""

import threading

import pytest
from django.db import connection

from durable import control, executor
from durable.models import Event, Run
from tests.durable.support import ENGINE_APPS

pytestmark = pytest.mark.django_db(transaction=True, available_apps=ENGINE_APPS)

WORKERS = 8


def race_to_claim(run_id, workers=WORKERS):
    barrier = threading.Barrier(workers)
    leases, errors = [], []

    def contender():
        try:
            barrier.wait(timeout=10)
            leases.append(executor.claim(run_id))
        except Exception as exc:  # surfaced by the assertion below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=contender) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(leases) == workers
    return [lease for lease in leases if lease is not None]


@pytest.fixture
def noop(define):
    @define("claims.noop")
    def wf(ctx, input):
        return None

    return "claims.noop"


def test_it_gives_a_queued_run_to_exactly_one_of_many_racing_workers(noop):
    for _ in range(3):
        run = control.start(noop)

        winners = race_to_claim(run.pk)
        assert len(winners) == 1
        run = Run.objects.get(pk=run.pk)
        assert (run.status, run.claims, run.lease_epoch) == ("running", 1, winners[0].epoch)
        assert Event.objects.filter(run=run, type="run.claimed").count() == 1


def test_it_does_not_claim_a_run_that_is_not_queued(noop):
    run = control.start(noop)
    control.pause(run.pk)

    assert executor.claim(run.pk) is None
    assert Run.objects.get(pk=run.pk).claims == 0
