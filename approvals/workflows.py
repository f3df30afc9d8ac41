"""Built-in workflow `demo.refund`: a refund that a reviewer approves, edits or rejects in the inbox.

It looks up the order, asks for approval of the `refund` call (the run then waits without a worker),
and sends the refund with the arguments the reviewer approved. The refund goes to a stand-in payment
provider that, like real ones, deduplicates by idempotency key: `effects_file` (optional) is its
ledger, one line per refund it made, and `<effects_file>.calls` logs every call it received. The
crash tests count both; `tool_ms` makes the call slow enough to kill a worker inside it.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from typing import Any

from approvals.policies import ApprovalPolicy
from durable.context import Context, current_step
from durable.errors import InvalidInput
from durable.registry import workflow

REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order": {"type": "string", "minLength": 1, "maxLength": 40},
        "amount": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "note": {"type": "string", "maxLength": 500},
    },
    "required": ["order", "amount", "currency"],
    "additionalProperties": False,
}


def look_up_order(order: str) -> dict[str, Any]:
    digest = int(hashlib.sha256(order.encode()).hexdigest()[:6], 16)
    return {"id": order, "total": 20 + digest % 480, "currency": "EUR", "customer": f"customer-{digest % 97}"}


def send_refund(arguments: dict[str, Any], effects_file: str | None, tool_ms: int) -> dict[str, Any]:
    """The external call. Its idempotency key (run:seq) is the same on every attempt of this step, so
    the provider refunds once however often a crash makes the worker call it again."""
    step = current_step()
    key = step.idempotency_key if step else "no-step"
    if effects_file:
        with open(f"{effects_file}.calls", "a", encoding="utf-8") as calls:
            calls.write(f"{key}\n")
        with open(effects_file, "a+", encoding="utf-8") as ledger:
            fcntl.flock(ledger, fcntl.LOCK_EX)  # two workers may call at once after a takeover
            ledger.seek(0)
            if key not in ledger.read().split():
                ledger.write(f"{key}\n")
    if tool_ms:
        time.sleep(tool_ms / 1000)
    return {"refund_id": "rf_" + hashlib.sha256(key.encode()).hexdigest()[:12], "amount": arguments["amount"],
            "currency": arguments["currency"]}


@workflow(
    "demo.refund",
    version="1",
    input_example={"order": "A-1042", "amount": 120, "reason": "arrived damaged"},
)
def refund(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Proposes a refund; a reviewer approves, edits or rejects it in the approval inbox."""
    if not isinstance(input, dict) or not isinstance(input.get("order"), str):
        raise InvalidInput('demo.refund needs {"order": "<order id>", "amount": <integer>}')
    order = ctx.step(look_up_order, input["order"], name="look_up_order")
    proposal = {
        "order": order["id"],
        "amount": int(input.get("amount") or order["total"]),
        "currency": order["currency"],
        "note": str(input.get("reason", ""))[:500],
    }
    expires = input.get("expires_after")
    decision = ctx.approval(
        "refund",
        proposal,
        schema=REFUND_SCHEMA,
        summary=f"Refund {proposal['amount']} {proposal['currency']} on order {order['id']} "
                f"for {order['customer']}" + (f": {proposal['note']}" if proposal["note"] else ""),
        policy=ApprovalPolicy(group="reviewers", expires_after=float(expires) if expires else None,
                              fallback="reject", name="refunds"),
    )
    if not decision.approved:
        return {"refunded": False, "reason": decision.reason, "decided_by": decision.decided_by}
    decision.verify("refund", decision.arguments)
    receipt = ctx.step(send_refund, decision.arguments, input.get("effects_file"), int(input.get("tool_ms", 0)),
                       name="send_refund")
    return {"refunded": True, "receipt": receipt, "approved_by": decision.decided_by}
