"""Concurrent deciders: exactly one decision per approval (FI-14), and cancel racing approve (FI-15)."""

import threading

import pytest
from django.db import close_old_connections, connection

from approvals import decisions
from approvals.models import Approval, AuditRecord
from durable import control

pytestmark = pytest.mark.django_db(transaction=True)


def _race(*actions):
    """Run the callables at the same moment in threads (own connections); return results/exceptions."""
    barrier = threading.Barrier(len(actions))
    results: list = [None] * len(actions)

    def run(index, action):
        try:
            barrier.wait()
            results[index] = action()
        except BaseException as exc:  # noqa: BLE001 - the race's loser is data here
            results[index] = exc
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_it_records_one_decision_when_reviewers_click_together(refund_workflow, people):
    rounds = 10 if connection.vendor == "postgresql" else 4
    for _ in range(rounds):
        run = refund_workflow(user=people["starter"])
        approval = Approval.objects.get(run=run)
        results = _race(
            lambda: decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True),
            lambda: decisions.decide(approval_id=approval.pk, user=people["bo"], approved=False, reason="no"),
            lambda: decisions.decide(approval_id=approval.pk, user=people["cy"], approved=True),
        )
        winners = [r for r in results if isinstance(r, Approval)]
        losers = [r for r in results if isinstance(r, decisions.AlreadyDecided)]
        assert len(winners) == 1 and len(losers) == 2, results
        final = AuditRecord.objects.filter(approval=approval, action__in=["approved", "rejected"])
        assert final.count() == 1


def test_it_lets_cancel_and_approve_race_without_an_effect_after_the_cancel(refund_workflow, people):
    rounds = 10 if connection.vendor == "postgresql" else 4
    for _ in range(rounds):
        run = refund_workflow(user=people["starter"])
        approval = Approval.objects.get(run=run)
        results = _race(
            lambda: decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True),
            lambda: control.cancel(run.pk),
        )
        approval.refresh_from_db()
        run.refresh_from_db()
        assert run.status == "cancelled", results
        assert approval.status in ("approved", "cancelled")
        from tests.conftest import drain

        assert drain(run.pk).status == "cancelled"
    assert refund_workflow.sent == []
