"""What the inbox cards, the detail page and the live updates show, computed in a fixed number of
queries. The page views and the websocket consumer build their template contexts here and render the
same partials (_card.html, _decision.html, _policy.html, _audit.html).

Model output is untrusted: arguments, summaries and conversation text reach templates as plain
strings and are escaped there; nothing here marks anything safe.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from approvals import decisions, inbox
from approvals.models import Approval, ApprovalStatus, AuditRecord, Vote
from approvals.policies import ApprovalPolicy
from durable.models import TERMINAL, Step

PREVIEW_CHARS = 240
JSON_LIMIT = 200_000
STEPS_SHOWN = 60
MESSAGES_SHOWN = 40
MESSAGE_CHARS = 4_000
AUDIT_SHOWN = 200
FALLBACKS = {"reject": "rejected", "approve": "approved", "escalate": "escalated"}


def pretty(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    return text if len(text) <= JSON_LIMIT else text[:JSON_LIMIT] + "\n… (cut)"


def compact(value: Any, limit: int = PREVIEW_CHARS) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome_text(approval: Approval) -> str:
    """One line saying who decided and how, for cards that leave the inbox and for losers."""
    who = approval.decided_by.get_username() if approval.decided_by_id and approval.decided_by else ""
    if approval.status == ApprovalStatus.PENDING:
        return f"Escalated to {approval.group}" if approval.escalated else "Waiting for a decision"
    if approval.status == ApprovalStatus.CANCELLED:
        return f"Closed: run #{approval.run_id} was cancelled, nothing will run"
    verb = "Approved" if approval.status == ApprovalStatus.APPROVED else "Rejected"
    if approval.decided_how == "expired":
        return f"{verb} by its expiry policy (nobody decided in time)"
    edited = " with edited arguments" if approval.status == ApprovalStatus.APPROVED and approval.edited else ""
    reason = f": {approval.reason}" if approval.status == ApprovalStatus.REJECTED and approval.reason else ""
    return f"{verb} by {who or approval.decided_how or 'the system'}{edited}{reason}"


def status_tone(status: str) -> str:
    return {"pending": "wait", "approved": "good", "rejected": "bad", "cancelled": "muted"}.get(status, "neutral")


@dataclass
class PolicyView:
    rules: ApprovalPolicy
    group: str
    escalated: bool
    votes: list[Vote]
    expires_at: dt.datetime | None
    started_by: str | None

    @property
    def fallback_text(self) -> str:
        if self.rules.expires_after is None:
            return "no expiry: it waits until someone decides"
        if self.rules.fallback == "escalate" and not self.escalated:
            return f"escalates to {self.rules.escalate_to}, which then has as long again before it is rejected"
        if self.rules.fallback == "escalate":
            return "rejected (already escalated once)"
        return FALLBACKS[self.rules.fallback]

    @property
    def expires_after_text(self) -> str:
        seconds = self.rules.expires_after
        if seconds is None:
            return ""
        return duration(seconds)


def duration(value: float) -> str:
    if value < 10:
        return f"{max(value, 0.0):.1f} s"
    seconds = int(value)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def policy_view(approval: Approval) -> PolicyView:
    started_by = approval.run.started_by
    return PolicyView(
        rules=ApprovalPolicy.from_dict(approval.policy),
        group=approval.group,
        escalated=approval.escalated,
        votes=list(Vote.objects.filter(approval=approval).select_related("user").order_by("id")),
        expires_at=approval.expires_at,
        started_by=started_by.get_username() if started_by else None,
    )


def card_context(approval: Approval, user: Any, votes: dict[int, int], *, gone: bool = False,
                 live: bool = False, upsert: str = "") -> dict[str, Any]:
    rules = ApprovalPolicy.from_dict(approval.policy)
    return {
        "a": approval,
        "preview": compact(approval.arguments),
        "own_run": inbox.own_run(approval, user),
        "quorum": rules.quorum,
        "votes": votes.get(approval.pk, 0),
        "fallback": FALLBACKS[rules.fallback],
        "gone": gone,
        "outcome": outcome_text(approval) if gone else "",
        "tone": status_tone(approval.status),
        "live": live,
        "upsert": upsert,
    }


def decision_context(approval: Approval, user: Any) -> dict[str, Any]:
    """The decision panel: the forms when the user may decide now, else the reason or the outcome."""
    refusal = None
    if approval.status == ApprovalStatus.PENDING:
        if approval.run.status in TERMINAL:
            refusal = f"Run #{approval.run_id} already {approval.run.status}: a decision could change nothing."
        else:
            refusal = decisions.may_decide(approval, user)
    return {
        "a": approval,
        "pending": approval.status == ApprovalStatus.PENDING,
        "refusal": refusal,
        "outcome": outcome_text(approval),
        "tone": status_tone(approval.status),
        "arguments_json": pretty(approval.arguments),
        "arguments_rows": min(max(pretty(approval.arguments).count("\n") + 2, 4), 24),
        "final_json": pretty(approval.final_arguments) if approval.final_arguments is not None else "",
        "edit_changes": _edit_changes(approval),
    }


def _edit_changes(approval: Approval) -> list[tuple[str, str, str]]:
    if not approval.edited:
        return []
    return [(key or "(whole value)", compact(old, 400), compact(new, 400))
            for key, (old, new) in decisions.diff(approval.arguments, approval.final_arguments).items()]


def diff_rows(before: Any, after: Any) -> list[tuple[str, str, str]]:
    return [(key or "(whole value)", compact(old, 400), compact(new, 400))
            for key, (old, new) in decisions.diff(before, after).items()]


@dataclass
class AuditEntry:
    record: AuditRecord
    actor: str
    text: str


def audit_entries(approval: Approval) -> list[AuditEntry]:
    records = list(AuditRecord.objects.filter(approval=approval).select_related("actor").order_by("-id")[:AUDIT_SHOWN])
    return [AuditEntry(r, r.actor.get_username() if r.actor else "system", _audit_text(r)) for r in records]


def _audit_text(record: AuditRecord) -> str:
    data = record.data if isinstance(record.data, dict) else {}
    if record.action == "commented":
        return str(data.get("text", ""))
    if record.action == "requested":
        return f"asked {data.get('group', '')} to approve {data.get('tool', '')}"
    if record.action == "escalated":
        return f"escalated from {data.get('previous', '')} to {data.get('to', '')}"
    if record.action == "voted":
        return f"approval {data.get('votes')} of {data.get('quorum')}"
    if record.action == "viewed":
        return "opened from an email link" if data.get("via") == "link" else "opened the approval"
    parts = [str(data.get("how", ""))]
    if data.get("reason"):
        parts.append(f"reason: {data['reason']}")
    if data.get("edited"):
        parts.append("edited " + ", ".join(f"{k or 'value'}: {compact(v[0], 80)} → {compact(v[1], 80)}"
                                             for k, v in data["edited"].items()))
    return "; ".join(p for p in parts if p)


@dataclass
class StepRow:
    step: Step
    duration_ms: float | None


def steps_before(approval: Approval) -> tuple[list[StepRow], int]:
    """The run's steps before the approval (the newest STEPS_SHOWN), and how many earlier ones exist."""
    steps = list(
        Step.objects.filter(run_id=approval.run_id, seq__lt=approval.seq)
        .only("id", "run_id", "seq", "name", "kind", "status", "attempts", "started_at", "finished_at")
        .order_by("-seq")[:STEPS_SHOWN]
    )
    steps.reverse()
    earlier = steps[0].seq if steps else 0
    rows = [StepRow(s, (s.finished_at - s.started_at).total_seconds() * 1000
                    if s.started_at and s.finished_at else None) for s in steps]
    return rows, earlier


@dataclass
class Message:
    role: str
    content: str
    tool_calls: list[tuple[str, str]]
    seq: int


def conversation(approval: Approval) -> list[Message]:
    """The model conversation that led to the request: each model step's new messages, then its reply
    (how durable.agents journals a model call). Empty for workflows without model steps."""
    llm_steps = list(
        Step.objects.filter(run_id=approval.run_id, seq__lt=approval.seq, kind="llm")
        .only("seq", "input", "output").order_by("-seq")[:MESSAGES_SHOWN]
    )
    llm_steps.reverse()
    messages: list[Message] = []
    for step in llm_steps:
        sent = _call_input(step.input)
        if sent.get("instructions"):
            messages.append(Message("system", _text(sent["instructions"]), [], step.seq))
        for message in sent.get("new_messages") or []:
            if isinstance(message, dict):
                messages.append(_message(message, step.seq))
        reply = step.output.get("message") if isinstance(step.output, dict) else None
        if isinstance(reply, dict):
            messages.append(_message(reply, step.seq))
    return messages[-MESSAGES_SHOWN:]


def _call_input(value: Any) -> dict[str, Any]:
    """A step's recorded input: the engine stores a call's arguments as {"args": [...], "kwargs": {...}}."""
    if isinstance(value, dict) and isinstance(value.get("args"), list):
        value = value["args"][0] if value["args"] else value.get("kwargs")
    return value if isinstance(value, dict) else {}


def _message(message: dict[str, Any], seq: int) -> Message:
    calls = [
        (str(call.get("name", "")), compact(call.get("arguments"), 600))
        for call in message.get("tool_calls") or [] if isinstance(call, dict)
    ]
    return Message(str(message.get("role", "?")), _text(message.get("content")), calls, seq)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else ("" if value is None else compact(value, MESSAGE_CHARS))
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " … (cut)"


def detail_context(approval: Approval, user: Any) -> dict[str, Any]:
    steps, earlier = steps_before(approval)
    return {
        "a": approval,
        "run": approval.run,
        "policy": policy_view(approval),
        "decision": decision_context(approval, user),
        "audit": audit_entries(approval),
        "steps": steps,
        "earlier_steps": earlier,
        "conversation": conversation(approval),
        "run_input_json": pretty(approval.run.input),
        "schema_json": pretty(approval.schema) if approval.schema else "",
        "now": timezone.now(),
    }
