"""Requesting and deciding approvals. Every path (inbox, API, command line, admin, expiry, cancel)
goes through these functions; a decision is one compare-and-set on the pending state, taken under the
approval's row lock, with its audit record and the run's wake-up in the same transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction

from approvals.models import Approval, ApprovalStatus, AuditRecord, Vote
from approvals.policies import ApprovalPolicy
from approvals.schema import SchemaError, validate
from durable import journal
from durable.errors import DurableError
from durable.executor import wake
from durable.models import TERMINAL, Run

DECIDE_PERMISSION = "approvals.decide_approval"


class ApprovalError(DurableError):
    status_code = 400


class ApprovalNotFound(ApprovalError):
    status_code = 404


class NotAllowed(ApprovalError):
    status_code = 403


class AlreadyDecided(ApprovalError):
    """Someone (or expiry, or a cancel) decided first; says who and how."""

    status_code = 409

    def __init__(self, approval: Approval):
        who = approval.decided_by.get_username() if approval.decided_by else approval.decided_how or "the system"
        when = approval.decided_at.isoformat(timespec="seconds") if approval.decided_at else ""
        if approval.status == ApprovalStatus.CANCELLED:
            message = f"approval {approval.pk} was cancelled with its run {approval.run_id} {when}: nothing will run"
        else:
            message = f"approval {approval.pk} was already {approval.status} by {who} {when}"
        super().__init__(message.strip())
        self.approval = approval


class RunFinished(ApprovalError):
    """The approval is still pending but its run already ended: a decision could change nothing."""

    status_code = 409


class InvalidArguments(ApprovalError):
    status_code = 400


class NotApproved(DurableError):
    """A gated action was about to run without an approval for exactly these arguments."""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_hash(run_id: int, seq: int, tool: str, arguments: Any) -> str:
    """Binds a decision to one call: this run, this journal position, this tool, these arguments."""
    payload = canonical({"run": run_id, "seq": seq, "tool": tool, "arguments": arguments})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    """What `ctx.approval(...)` returns to the workflow."""

    approved: bool
    tool: str
    arguments: Any
    hash: str
    run_id: int
    seq: int
    reason: str = ""
    decided_by: str | None = None
    how: str = ""

    @classmethod
    def from_output(cls, output: Any) -> Decision:
        if isinstance(output, str):
            output = json.loads(output)
        return cls(**output)

    def verify(self, tool: str, arguments: Any) -> None:
        """Refuse to run anything but the approved call (trap 13)."""
        if not self.approved:
            raise NotApproved(f"{tool} was not approved: {self.reason or 'rejected'}")
        if tool != self.tool or arguments_hash(self.run_id, self.seq, tool, arguments) != self.hash:
            raise NotApproved(f"{tool} was approved with other arguments than these")


def _policy(policy: ApprovalPolicy | dict[str, Any] | None) -> ApprovalPolicy:
    if isinstance(policy, ApprovalPolicy):
        return policy
    return ApprovalPolicy.from_dict(policy)


def audit(approval: Approval, action: str, actor: Any = None, **data: Any) -> AuditRecord:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditRecord.objects.create(approval=approval, actor=user, action=action, data=data)


def request(
    *,
    run_id: int,
    seq: int,
    tool: str,
    arguments: Any,
    index: int = 0,
    policy: ApprovalPolicy | dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    summary: str = "",
) -> Approval:
    """Create a pending approval. Runs inside the transaction that parks the run (FI-11)."""
    rules = _policy(policy)
    now = journal.now_value()
    approval = Approval.objects.create(
        run_id=run_id,
        seq=seq,
        index=index,
        tool=tool,
        arguments=arguments,
        arguments_hash=arguments_hash(run_id, seq, tool, arguments),
        schema=schema,
        summary=summary,
        policy=rules.as_dict(),
        group=rules.group,
        expires_at=now + timedelta(seconds=rules.expires_after) if rules.expires_after else None,
    )
    audit(approval, "requested", tool=tool, group=rules.group, policy=rules.name)
    from approvals import notify

    notify.enqueue(approval.pk, "requested")
    from approvals import live

    live.poke_on_commit()
    return approval


def outcome(approval_id: int) -> dict[str, Any] | None:
    """The decision as the workflow sees it, or None while pending."""
    approval = Approval.objects.select_related("decided_by").get(pk=approval_id)
    if approval.status == ApprovalStatus.PENDING:
        return None
    approved = approval.status == ApprovalStatus.APPROVED
    return {
        "approved": approved,
        "tool": approval.tool,
        "arguments": approval.final_arguments if approved else approval.arguments,
        "hash": approval.final_hash if approved else "",
        "run_id": approval.run_id,
        "seq": approval.seq,
        "reason": approval.reason,
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "how": approval.decided_how,
    }


def get_approval(approval_id: Any) -> Approval:
    try:
        return Approval.objects.select_related("run", "decided_by").get(pk=int(approval_id))
    except (TypeError, ValueError, Approval.DoesNotExist):
        raise ApprovalNotFound(f"no approval with id {approval_id!r}") from None


def _lock(approval_id: Any) -> Approval:
    """Lock the approval's run, then the approval (inside a transaction). Cancel takes the same
    order (it updates the run, then closes its approvals); the opposite order deadlocks on
    PostgreSQL when a cancel races a decision or an expiry (FI-15)."""
    try:
        pk = int(approval_id)
        run_id = Approval.objects.filter(pk=pk).values_list("run_id", flat=True).first()
    except (TypeError, ValueError, OverflowError):
        run_id = None
    if run_id is None:
        raise ApprovalNotFound(f"no approval with id {approval_id!r}")
    list(Run.objects.select_for_update().filter(pk=run_id).values_list("pk", flat=True))
    return Approval.objects.select_for_update(of=("self",)).select_related("run").get(pk=pk)


def may_decide(approval: Approval, user: AbstractBaseUser | AnonymousUser) -> str | None:
    """None if `user` may decide this approval now, else the reason they may not."""
    if not user.is_authenticated or not user.is_active:
        return "log in to decide approvals"
    if not user.has_perm(DECIDE_PERMISSION):
        return "you are not a reviewer"
    if not user.is_superuser and not user.groups.filter(name=approval.group).exists():
        return f"only the group {approval.group!r} decides this approval"
    rules = ApprovalPolicy.from_dict(approval.policy)
    if rules.four_eyes and approval.run.started_by_id is not None and approval.run.started_by_id == user.pk:
        return "four-eyes rule: you started this run, so someone else must decide its actions"
    return None


def diff(before: Any, after: Any) -> dict[str, Any]:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {"": [before, after]} if before != after else {}
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def decide(
    *,
    approval_id: Any,
    user: Any,
    approved: bool,
    reason: str = "",
    arguments: Any = None,
    expected_hash: str | None = None,
) -> Approval:
    """Approve (optionally with edited arguments) or reject. Exactly one decision wins; a loser gets
    AlreadyDecided saying who decided and how. With a quorum, an approval counts a vote until N
    distinct reviewers agreed on the same arguments; one rejection rejects."""
    if not approved and not reason.strip():
        raise ApprovalError("a rejection needs a reason: it goes back to the agent")
    with transaction.atomic():
        # The row lock serialises deciders of one approval (quorum counting included).
        approval = _lock(approval_id)
        if approval.status != ApprovalStatus.PENDING:
            raise AlreadyDecided(get_approval(approval.pk))
        if approval.run.status in TERMINAL:
            raise RunFinished(f"run {approval.run_id} already {approval.run.status}: this approval can change nothing")
        refusal = may_decide(approval, user)
        if refusal:
            raise NotAllowed(refusal)
        if expected_hash is not None and expected_hash != approval.arguments_hash:
            raise ApprovalError("this decision was made on a different proposal; reload the approval")
        final_arguments = approval.arguments if arguments is None else arguments
        if approved and arguments is not None and approval.schema:
            try:
                validate(arguments, approval.schema)
            except SchemaError as exc:
                raise InvalidArguments(f"edited arguments are invalid: {exc}") from None
        final_hash = arguments_hash(approval.run_id, approval.seq, approval.tool, final_arguments)
        rules = ApprovalPolicy.from_dict(approval.policy)
        changes = diff(approval.arguments, final_arguments)
        if approved and rules.quorum > 1:
            try:
                with transaction.atomic():
                    Vote.objects.create(approval=approval, user=user, arguments_hash=final_hash, comment=reason)
            except IntegrityError:
                raise ApprovalError("you already approved this; another reviewer must too") from None
            votes = Vote.objects.filter(approval=approval, arguments_hash=final_hash).count()
            if votes < rules.quorum:
                audit(approval, "voted", user, votes=votes, quorum=rules.quorum, changes=changes)
                return approval
        return _close(
            approval,
            status=ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED,
            user=user,
            how="reviewer",
            reason=reason,
            final_arguments=final_arguments if approved else None,
            final_hash=final_hash if approved else "",
            changes=changes if approved else {},
        )


def _close(
    approval: Approval,
    *,
    status: str,
    user: Any,
    how: str,
    reason: str,
    final_arguments: Any = None,
    final_hash: str = "",
    changes: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Approval:
    """The compare-and-set on the pending state, its audit record and the run's wake-up."""
    decided_by = user if getattr(user, "is_authenticated", False) else None
    count = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
        status=status,
        decided_by=decided_by,
        decided_at=now or journal.now_value(),
        decided_how=how,
        reason=reason,
        final_arguments=final_arguments,
        final_hash=final_hash,
    )
    if count != 1:
        raise AlreadyDecided(get_approval(approval.pk))
    action = {"approved": "approved", "rejected": "rejected", "cancelled": "cancelled"}[status]
    data: dict[str, Any] = {"how": how}
    if reason:
        data["reason"] = reason
    if changes:
        data["edited"] = changes
    audit(approval, action, user, **data)
    if status != ApprovalStatus.CANCELLED:
        wake(approval.run_id, reason="approval", approval=approval.pk)
    from approvals import live

    live.poke_on_commit()
    return get_approval(approval.pk)


def comment(*, approval_id: Any, user: Any, text: str) -> AuditRecord:
    if not text.strip():
        raise ApprovalError("a comment cannot be empty")
    approval = get_approval(approval_id)
    if not user.has_perm(DECIDE_PERMISSION):
        raise NotAllowed("you are not a reviewer")
    return audit(approval, "commented", user, text=text[:5000])


def record_view(approval: Approval, user: Any) -> None:
    audit(approval, "viewed", user)


def close_for_run(run_id: int, user: Any) -> None:
    """Cancel hook: a cancelled run's pending approvals close in the cancel's transaction (FI-15)."""
    for approval in Approval.objects.select_for_update().filter(run_id=run_id, status=ApprovalStatus.PENDING):
        _close(approval, status=ApprovalStatus.CANCELLED, user=user, how="run cancelled",
               reason=f"run {run_id} was cancelled")


def expire_due(now: datetime | None = None) -> int:
    """Apply each expired approval's fallback: reject, approve, or escalate once then reject."""
    now = now or journal.now_value()
    handled = 0
    for approval_id in Approval.objects.filter(
        status=ApprovalStatus.PENDING, expires_at__lte=now
    ).values_list("pk", flat=True)[:100]:
        with transaction.atomic():
            approval = _lock(approval_id)
            if approval.status != ApprovalStatus.PENDING or approval.expires_at is None or approval.expires_at > now:
                continue
            rules = ApprovalPolicy.from_dict(approval.policy)
            if rules.fallback == "escalate" and not approval.escalated and rules.escalate_to:
                Approval.objects.filter(pk=approval.pk).update(
                    group=rules.escalate_to, escalated=True,
                    expires_at=now + timedelta(seconds=rules.expires_after or 0),
                )
                audit(approval, "escalated", None, to=rules.escalate_to, previous=approval.group)
                from approvals import live, notify

                notify.enqueue(approval.pk, "escalated")
                live.poke_on_commit()
            elif rules.fallback == "approve":
                _close(approval, status=ApprovalStatus.APPROVED, user=None, how="expired",
                       reason="expired: approved by policy", final_arguments=approval.arguments,
                       final_hash=approval.arguments_hash, now=now)
            else:
                _close(approval, status=ApprovalStatus.REJECTED, user=None, how="expired",
                       reason="expired: nobody decided in time", now=now)
            handled += 1
    return handled
