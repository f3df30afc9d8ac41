"""`durable approvals`, `durable approve ID`, `durable reject ID --reason ...`: the inbox from a shell.

A decision from the command line is made as a named user (`--user`), and every policy applies to that
user exactly as in the browser: group, four-eyes, quorum.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, OutputWrapper

from approvals import decisions
from approvals.models import Approval, ApprovalStatus


def add_parsers(sub: Any) -> None:
    listing = sub.add_parser("approvals", help="list approvals (pending by default)")
    listing.add_argument("--status", default="pending", choices=[s.value for s in ApprovalStatus] + ["all"])
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=50)
    approve = sub.add_parser("approve", help="approve a pending approval")
    approve.add_argument("approval_id")
    approve.add_argument("--user", required=True, help="the reviewer deciding (policies apply to them)")
    approve.add_argument("--arguments", help="edited arguments as JSON (validated against the tool's schema)")
    approve.add_argument("--comment", default="")
    reject = sub.add_parser("reject", help="reject a pending approval")
    reject.add_argument("approval_id")
    reject.add_argument("--user", required=True)
    reject.add_argument("--reason", required=True, help="goes back to the agent as the tool's result")


def _user(username: str) -> Any:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user {username!r}") from None


def do_approvals(out: OutputWrapper, options: dict[str, Any]) -> None:
    approvals = Approval.objects.select_related("run", "decided_by").order_by("-created_at")
    if options["status"] != "all":
        approvals = approvals.filter(status=options["status"])
    rows = [
        {
            "id": a.pk, "run": a.run_id, "tool": a.tool, "arguments": a.arguments, "status": a.status,
            "group": a.group, "created_at": a.created_at.isoformat(),
            "expires_at": a.expires_at.isoformat() if a.expires_at else None,
            "decided_by": a.decided_by.get_username() if a.decided_by else None, "reason": a.reason,
        }
        for a in approvals[: max(1, options["limit"])]
    ]
    if options["json"]:
        out.write(json.dumps(rows, indent=2))
        return
    out.write(f"{'ID':>6} {'RUN':>6} {'STATUS':<9} {'GROUP':<12} TOOL ARGUMENTS")
    for r in rows:
        out.write(f"{r['id']:>6} {r['run']:>6} {r['status']:<9} {r['group']:<12} {r['tool']} {json.dumps(r['arguments'])}")


def do_approve(out: OutputWrapper, options: dict[str, Any]) -> None:
    from durable.payloads import parse_json

    arguments = parse_json(options["arguments"], "--arguments") if options["arguments"] else None
    approval = decisions.decide(
        approval_id=options["approval_id"], user=_user(options["user"]), approved=True,
        reason=options["comment"], arguments=arguments,
    )
    out.write(f"approval {approval.pk}: {approval.status}")


def do_reject(out: OutputWrapper, options: dict[str, Any]) -> None:
    approval = decisions.decide(
        approval_id=options["approval_id"], user=_user(options["user"]), approved=False, reason=options["reason"]
    )
    out.write(f"approval {approval.pk}: {approval.status}")


HANDLERS = {"approvals": do_approvals, "approve": do_approve, "reject": do_reject}
