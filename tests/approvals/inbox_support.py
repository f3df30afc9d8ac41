"""Builders shared by the inbox tests (views, API, consumer): approvals requested straight through
approvals.decisions.request for a run parked as the engine parks it, without driving a worker."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.test import Client
from django.utils import timezone

from approvals import decisions
from approvals.models import Approval, AuditRecord, Vote
from approvals.policies import ApprovalPolicy
from durable.models import Run, Status
from tests.runs.ui import make_run

SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}},
    "required": ["order", "amount"],
}


def make_approval(
    *,
    tool: str = "refund",
    arguments: Any = None,
    group: str = "reviewers",
    policy: ApprovalPolicy | None = None,
    started_by: Any = None,
    workflow: str = "shop.support",
    steps: int = 2,
    schema: dict[str, Any] | None = SCHEMA,
    summary: str = "",
    age: dt.timedelta | None = None,
) -> Approval:
    run = make_run(workflow=workflow, status=Status.WAITING_APPROVAL, steps=steps, started_by=started_by)
    Run.objects.filter(pk=run.pk).update(lease_owner="", lease_expires_at=None)
    approval = decisions.request(
        run_id=run.pk, seq=steps, tool=tool, arguments={"order": "A-1", "amount": 250} if arguments is None else arguments,
        policy=policy or ApprovalPolicy(group=group), schema=schema, summary=summary,
    )
    if age is not None:
        Approval.objects.filter(pk=approval.pk).update(created_at=timezone.now() - age)
        approval.refresh_from_db()
    return approval


def logged_in(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def state(approval: Approval) -> tuple[Any, ...]:
    """Everything a refused decision must leave untouched."""
    fresh = Approval.objects.get(pk=approval.pk)
    return (fresh.status, fresh.decided_by_id, fresh.final_hash, fresh.reason,
            AuditRecord.objects.filter(approval=fresh).exclude(action__in=["viewed", "commented"]).count(),
            Vote.objects.filter(approval=fresh).count(), Run.objects.get(pk=fresh.run_id).status)


def card_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<article id="approval-(\d+)"', html)]
