"""The durable wait, decisions, policies, expiry, cancel, audit."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction

from approvals import decisions
from approvals.models import Approval, AuditRecord
from approvals.policies import ApprovalPolicy
from durable import control
from durable.models import Status
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def _pending(run):
    return Approval.objects.get(run=run, status="pending")


def test_it_parks_the_run_waiting_for_approval_without_a_lease(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    assert run.status == Status.WAITING_APPROVAL
    assert run.lease_owner == "" and run.lease_expires_at is None
    approval = _pending(run)
    assert approval.arguments == {"order": "A-1", "amount": 250}
    assert approval.audit.filter(action="requested").count() == 1


def test_it_continues_the_run_with_the_approved_arguments(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    decisions.decide(approval_id=_pending(run).pk, user=people["ana"], approved=True)
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert refund_workflow.sent == [{"order": "A-1", "amount": 250}]


def test_it_returns_the_rejection_reason_to_the_workflow(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    decisions.decide(approval_id=_pending(run).pk, user=people["ana"], approved=False, reason="too much")
    run = drain(run.pk)
    assert run.output == {"refunded": False, "reason": "too much"}
    assert refund_workflow.sent == []


def test_it_runs_edited_arguments_and_stores_the_difference(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    approval = decisions.decide(
        approval_id=_pending(run).pk, user=people["ana"], approved=True, arguments={"order": "A-1", "amount": 100}
    )
    assert approval.edited
    assert approval.audit.get(action="approved").data["edited"] == {"amount": [250, 100]}
    drain(run.pk)
    assert refund_workflow.sent == [{"order": "A-1", "amount": 100}]


def test_it_refuses_edited_arguments_that_fail_the_schema(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    approval = _pending(run)
    with pytest.raises(decisions.InvalidArguments, match="amount"):
        decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True, arguments={"order": "A-1", "amount": "lots"})
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_it_records_exactly_one_decision_and_tells_the_loser_who_won(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    approval = _pending(run)
    decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True)
    with pytest.raises(decisions.AlreadyDecided, match="approved by ana"):
        decisions.decide(approval_id=approval.pk, user=people["bo"], approved=False, reason="no")
    assert AuditRecord.objects.filter(approval=approval, action__in=["approved", "rejected"]).count() == 1


def test_it_applies_four_eyes(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    with pytest.raises(decisions.NotAllowed, match="four-eyes"):
        decisions.decide(approval_id=_pending(run).pk, user=people["starter"], approved=True)


def test_it_refuses_users_outside_the_deciding_group(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    with pytest.raises(decisions.NotAllowed):
        decisions.decide(approval_id=_pending(run).pk, user=people["op"], approved=True)


def test_it_needs_a_quorum_of_distinct_reviewers(refund_workflow, people):
    run = refund_workflow(ApprovalPolicy(quorum=2), user=people["starter"])
    approval = _pending(run)
    decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    with pytest.raises(decisions.ApprovalError, match="already approved"):
        decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True)
    decisions.decide(approval_id=approval.pk, user=people["bo"], approved=True)
    assert Approval.objects.get(pk=approval.pk).status == "approved"


@pytest.mark.parametrize("fallback,expected", [("reject", "rejected"), ("approve", "approved")])
def test_it_applies_the_expiry_fallback(refund_workflow, people, fallback, expected):
    run = refund_workflow(ApprovalPolicy(expires_after=60, fallback=fallback), user=people["starter"])
    approval = _pending(run)
    assert decisions.expire_due(now=approval.expires_at - timedelta(seconds=1)) == 0
    assert decisions.expire_due(now=approval.expires_at + timedelta(seconds=1)) == 1
    approval.refresh_from_db()
    assert approval.status == expected and approval.decided_how == "expired"
    assert drain(run.pk).status == Status.SUCCEEDED


def test_it_escalates_once_then_rejects(refund_workflow, people):
    policy = ApprovalPolicy(expires_after=60, fallback="escalate", escalate_to="run admins")
    run = refund_workflow(policy, user=people["starter"])
    approval = _pending(run)
    decisions.expire_due(now=approval.expires_at + timedelta(seconds=1))
    approval.refresh_from_db()
    assert approval.status == "pending" and approval.group == "run admins" and approval.escalated
    with pytest.raises(decisions.NotAllowed):
        decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True)
    decisions.expire_due(now=approval.expires_at + timedelta(seconds=1))
    approval.refresh_from_db()
    assert approval.status == "rejected"
    assert list(approval.audit.values_list("action", flat=True)) == ["requested", "escalated", "rejected"]


def test_it_closes_pending_approvals_when_the_run_is_cancelled(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    approval = _pending(run)
    control.cancel(run.pk)
    approval.refresh_from_db()
    assert approval.status == "cancelled"
    with pytest.raises(decisions.AlreadyDecided, match="cancelled"):
        decisions.decide(approval_id=approval.pk, user=people["ana"], approved=True)
    assert refund_workflow.sent == []


def test_it_keeps_the_decision_across_a_pause(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    control.pause(run.pk)
    decisions.decide(approval_id=_pending(run).pk, user=people["ana"], approved=True)
    assert drain(run.pk).status == Status.PAUSED
    control.resume(run.pk)
    assert drain(run.pk).status == Status.SUCCEEDED
    assert len(refund_workflow.sent) == 1


def test_it_refuses_to_run_other_arguments_than_approved(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    decisions.decide(approval_id=_pending(run).pk, user=people["ana"], approved=True)
    outcome = decisions.Decision.from_output(decisions.outcome(Approval.objects.get(run=run).pk))
    outcome.verify("refund", {"order": "A-1", "amount": 250})
    with pytest.raises(decisions.NotApproved):
        outcome.verify("refund", {"order": "A-1", "amount": 9999})


def test_it_keeps_the_audit_trail_append_only(refund_workflow, people):
    run = refund_workflow(user=people["starter"])
    record = AuditRecord.objects.get(approval__run=run)
    from approvals.models import AppendOnly

    with pytest.raises(AppendOnly):
        record.save()
    with pytest.raises(AppendOnly):
        record.delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(action="forged")
    assert AuditRecord.objects.get(pk=record.pk).action == "requested"


def test_it_gives_unknown_approvals_a_clear_error(people):
    with pytest.raises(decisions.ApprovalNotFound):
        decisions.decide(approval_id=424242, user=people["ana"], approved=True)
    with pytest.raises(decisions.ApprovalNotFound):
        decisions.decide(approval_id="nope", user=people["ana"], approved=True)


def test_it_decides_from_the_command_line_as_a_named_reviewer(refund_workflow, people):
    from django.core.management import CommandError, call_command

    run = refund_workflow(user=people["starter"])
    approval = _pending(run)
    with pytest.raises(CommandError, match="four-eyes"):
        call_command("durable", "approve", str(approval.pk), "--user", "starter")
    call_command("durable", "reject", str(approval.pk), "--user", "ana", "--reason", "not eligible")
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.decided_by == people["ana"]
    with pytest.raises(CommandError, match="already rejected by ana"):
        call_command("durable", "approve", str(approval.pk), "--user", "bo")
