from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from approvals.policies import ApprovalPolicy
from durable import control
from tests.conftest import drain


@pytest.fixture
def people(db: Any) -> dict[str, User]:
    """A fixed cast: the run's starter, three reviewers, an operator, a run admin."""
    from runs.roles import ensure_roles

    ensure_roles()
    cast = {}
    for name, groups in {
        "starter": ["reviewers", "run admins"],
        "ana": ["reviewers"],
        "bo": ["reviewers"],
        "cy": ["reviewers"],
        "op": ["operators"],
        "boss": ["run admins", "reviewers"],
    }.items():
        user = User.objects.create_user(name, f"{name}@example.com", "pw")
        user.groups.set(Group.objects.filter(name__in=groups))
        cast[name] = user
    return cast


@pytest.fixture
def refund_workflow(define: Any) -> Any:
    """A workflow that asks approval for a refund, then 'sends' it (records what it sent)."""
    sent: list[Any] = []

    def start(policy: ApprovalPolicy | None = None, *, user: Any = None, amount: int = 250) -> Any:
        name = f"t.refund.{len(sent)}.{id(policy)}"

        @define(name)
        def wf(ctx: Any, input: Any) -> Any:
            args = {"order": "A-1", "amount": input["amount"]}
            decision = ctx.approval(
                "refund", args, policy=policy,
                schema={"type": "object", "properties": {"order": {"type": "string"},
                        "amount": {"type": "integer", "minimum": 1}}, "required": ["order", "amount"]},
            )
            if not decision.approved:
                return {"refunded": False, "reason": decision.reason}
            decision.verify("refund", decision.arguments)
            ctx.step(lambda: sent.append(decision.arguments) or "ok", name="send_refund")
            return {"refunded": True, "arguments": decision.arguments}

        run = control.start(name, {"amount": amount}, user=user)
        return drain(run.pk)

    start.sent = sent  # type: ignore[attr-defined]
    return start
