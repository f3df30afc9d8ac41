"""Approvals with real worker processes killed around the decision (FI-12, FI-13, FI-04 for an
approved tool, FI-16): the decision is never asked again, the approved tool's effect happens at
most once per idempotency key, and pending approvals survive restarts of every worker.

The workflow is the built-in `demo.refund` (approvals/workflows.py, loaded by every worker): step 0
looks up the order, step 1 is the approval, step 2 sends the refund to a stand-in provider whose
ledger (the effects file) deduplicates by idempotency key, while `<effects>.calls` logs every call.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import decisions, inbox
from approvals.models import Approval, ApprovalStatus, AuditRecord
from durable import control
from durable.models import Run, Status, Step, StepStatus
from tests.chaos import chaos_workflows  # noqa: F401  (the kill hooks the test workers install)
from tests.chaos.harness import WorkerPool, probe, wait_status, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

APPROVAL_SEQ, TOOL_SEQ = 1, 2
DECISIONS = ("approved", "rejected", "cancelled")


@pytest.fixture
def people(transactional_db: None) -> dict[str, User]:
    from runs.roles import ensure_roles

    ensure_roles()
    starter = User.objects.create_user("starter", "starter@example.com", "pw")
    reviewer = User.objects.create_user("rev", "rev@example.com", "pw")
    reviewer.groups.add(Group.objects.get(name="reviewers"))
    return {"starter": starter, "reviewer": reviewer}


def start_refund(effects: Path, starter: User, *, amount: int = 120, tool_ms: int = 0, **extra: Any) -> Run:
    return control.start("demo.refund", {"order": f"A-{amount}", "amount": amount, "effects_file": str(effects),
                                         "tool_ms": tool_ms, **extra}, user=starter)


def lines(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def calls_of(effects: Path) -> Counter[str]:
    return lines(Path(f"{effects}.calls"))


def assert_one_decision(run: Run, how: str) -> Approval:
    """INV-4/INV-5: one approval for the gated step, one decision in its audit trail."""
    approvals = list(Approval.objects.filter(run=run))
    assert len(approvals) == 1, approvals
    actions = Counter(AuditRecord.objects.filter(approval=approvals[0]).values_list("action", flat=True))
    assert actions["requested"] == 1 and sum(actions[a] for a in DECISIONS) == 1 and actions[how] == 1, actions
    step = Step.objects.get(run=run, seq=APPROVAL_SEQ)
    assert step.kind == "approval" and step.status == StepStatus.COMPLETED
    return approvals[0]


def assert_waiting_match_pending() -> None:
    """INV-4: runs waiting for approval and pending approvals correspond one to one; none holds a lease."""
    waiting = set(Run.objects.filter(status=Status.WAITING_APPROVAL).values_list("pk", flat=True))
    pending = list(Approval.objects.filter(status=ApprovalStatus.PENDING).values_list("run_id", flat=True))
    assert sorted(pending) == sorted(waiting) and len(pending) == len(set(pending)), (waiting, pending)
    assert not Run.objects.filter(pk__in=waiting).exclude(lease_owner="").exists()


def test_it_neither_asks_again_nor_runs_the_tool_twice_when_workers_die_after_the_decision(
    workers: WorkerPool, effects: Path, people: dict[str, User]
) -> None:
    first = workers.start()
    run = start_refund(effects, people["starter"])
    wait_status(run.pk, Status.WAITING_APPROVAL, timeout=20)
    first.kill()

    # FI-12: the decision commits while no worker runs; the run's wake-up waits in the queue.
    approval = Approval.objects.get(run=run)
    decisions.decide(approval_id=approval.pk, user=people["reviewer"], approved=True,
                     arguments=dict(approval.arguments, amount=90), expected_hash=approval.arguments_hash)
    assert Run.objects.get(pk=run.pk).status == Status.QUEUED

    # FI-13: this worker reads the decision, records it in the journal, and dies right after that
    # commit, before it calls the tool.
    # (ready=False: it may take the queued run and die before it logs that it started)
    doomed = workers.start(env={"CHAOS_KILL_AFTER_CHECKPOINT": str(APPROVAL_SEQ)}, test_workflows=True, ready=False)
    wait_until(lambda: not doomed.alive(), 30, "the worker to die after recording the decision")
    assert Step.objects.get(run=run, seq=APPROVAL_SEQ).status == StepStatus.COMPLETED
    assert not Step.objects.filter(run=run, seq=TOOL_SEQ).exists() and not calls_of(effects)

    last = workers.start()
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=30)
    assert_one_decision(run, "approved")
    key = f"{run.pk}:{TOOL_SEQ}"
    assert calls_of(effects) == {key: 1}, "the approved tool was called again"
    assert lines(effects) == {key: 1}
    assert run.output["receipt"]["amount"] == 90  # the edited arguments ran, as approved
    assert last.did(Step.objects.get(run=run, seq=TOOL_SEQ).worker)


def test_it_records_the_approved_tool_once_when_its_worker_dies_inside_it(
    workers: WorkerPool, effects: Path, people: dict[str, User]
) -> None:
    workers.start()
    run = start_refund(effects, people["starter"], tool_ms=4000)
    wait_status(run.pk, Status.WAITING_APPROVAL, timeout=20)
    approval = Approval.objects.get(run=run)
    decisions.decide(approval_id=approval.pk, user=people["reviewer"], approved=True,
                     expected_hash=approval.arguments_hash)

    key = f"{run.pk}:{TOOL_SEQ}"
    wait_until(lambda: calls_of(effects)[key] >= 1, 30, "the refund call to start")
    owner = Run.objects.get(pk=run.pk).lease_owner
    workers.owner(owner).kill()  # FI-04: the provider has the call; the worker never records its result
    assert not Step.objects.filter(run=run, seq=TOOL_SEQ, status=StepStatus.COMPLETED).exists()

    survivor = workers.start()
    run = wait_status(run.pk, Status.SUCCEEDED, timeout=60)
    assert_one_decision(run, "approved")
    assert set(calls_of(effects)) == {key}, "every call carried the step's idempotency key"
    assert calls_of(effects)[key] <= 2  # called again after the crash, with the same key...
    assert lines(effects) == {key: 1}  # ...so the provider refunded once
    step = Step.objects.get(run=run, seq=TOOL_SEQ)
    assert step.status == StepStatus.COMPLETED and survivor.did(step.worker)
    assert run.output["receipt"]["refund_id"].startswith("rf_")


def test_pending_approvals_survive_restarts_of_every_worker_and_stay_actionable(
    workers: WorkerPool, effects: Path, people: dict[str, User]
) -> None:
    worker = workers.start()
    runs = [start_refund(effects, people["starter"], amount=amount, expires_after=86400) for amount in (10, 20, 30)]
    expiring = start_refund(effects, people["starter"], amount=40, expires_after=3)  # falls back to reject
    for run in [*runs, expiring]:
        wait_status(run.pk, Status.WAITING_APPROVAL, timeout=20)
    pending = {a.run_id: a for a in Approval.objects.filter(run__in=runs)}

    for _ in range(3):  # FI-16: every worker process dies and is replaced while the approvals wait
        worker.kill()
        assert_waiting_match_pending()
        worker = workers.start()
        probe()  # the new worker takes tasks, and leaves the waiting runs alone
        assert_waiting_match_pending()
        visible = set(inbox.pending_for(people["reviewer"]).values_list("pk", flat=True))
        assert {a.pk for a in pending.values()} <= visible
    # The short one expired on a restarted worker's sweeper and its run went on with the rejection.
    expired = wait_status(expiring.pk, Status.SUCCEEDED, timeout=30)
    assert expired.output["refunded"] is False and "expired" in expired.output["reason"]
    assert_one_decision(expired, "rejected")
    # A day later (by the expiry clock) is still within the 24 h policy: nothing else expires.
    assert decisions.expire_due(now=timezone.now() + dt.timedelta(hours=23)) == 0

    # Still actionable through the inbox: approve, edit then approve, reject.
    browser = Client()
    browser.force_login(people["reviewer"])
    first, second, third = (pending[run.pk] for run in runs)
    assert browser.get(reverse("approvals:detail", args=[first.pk])).status_code == 200
    for approval, data in (
        (first, {"decision": "approve"}),
        (second, {"decision": "approve", "arguments": json.dumps(dict(second.arguments, amount=15))}),
        (third, {"decision": "reject", "reason": "not eligible"}),
    ):
        response = browser.post(reverse("approvals:decide", args=[approval.pk]),
                                {"expected_hash": approval.arguments_hash, **data})
        assert response.status_code == 302, response.content[:500]
    finished = {run.pk: wait_status(run.pk, Status.SUCCEEDED, timeout=30) for run in runs}
    assert finished[runs[0].pk].output["receipt"]["amount"] == 10
    assert finished[runs[1].pk].output["receipt"]["amount"] == 15
    assert finished[runs[2].pk].output == {"refunded": False, "reason": "not eligible", "decided_by": "rev"}
    for run, how in zip(runs, ("approved", "approved", "rejected"), strict=True):
        assert_one_decision(finished[run.pk], how)
    assert lines(effects) == {f"{runs[0].pk}:{TOOL_SEQ}": 1, f"{runs[1].pk}:{TOOL_SEQ}": 1}
    assert_waiting_match_pending()
