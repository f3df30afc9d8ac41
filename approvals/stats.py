"""Decided approvals: the history query and time to decision.

Medians are computed in Python over a bounded window (the most recent WINDOW decisions that match the
history filters), so the page costs one indexed query however long the history is. Only decisions a
person made count toward time to decision: expiry and cancels are not reviewer latency.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from approvals.models import Approval, ApprovalStatus

WINDOW = 2_000


def decided(filters: dict[str, Any]) -> QuerySet[Approval]:
    approvals = Approval.objects.exclude(status=ApprovalStatus.PENDING)
    if filters.get("status"):
        approvals = approvals.filter(status=filters["status"])
    if filters.get("tool"):
        approvals = approvals.filter(tool=filters["tool"].strip())
    if filters.get("reviewer"):
        approvals = approvals.filter(decided_by__username=filters["reviewer"].strip())
    if filters.get("decided_from"):
        approvals = approvals.filter(decided_at__gte=_day_start(filters["decided_from"]))
    if filters.get("decided_to"):
        approvals = approvals.filter(decided_at__lt=_day_start(filters["decided_to"]) + dt.timedelta(days=1))
    return approvals


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


@dataclass
class Latency:
    key: str
    decisions: int
    median_s: float
    approved: int
    rejected: int


def time_to_decision(filters: dict[str, Any], window: int = WINDOW) -> dict[str, Any]:
    """Median seconds from request to a reviewer's decision, per tool and per reviewer."""
    rows = list(
        decided(filters).filter(decided_how="reviewer", decided_at__isnull=False, decided_by__isnull=False)
        .order_by("-decided_at").values_list("tool", "decided_by__username", "status", "created_at", "decided_at")[:window]
    )
    by_tool: dict[str, list[tuple[float, str]]] = {}
    by_reviewer: dict[str, list[tuple[float, str]]] = {}
    everything: list[float] = []
    for tool, reviewer, status, created, decided_at in rows:
        seconds = max((decided_at - created).total_seconds(), 0.0)
        everything.append(seconds)
        by_tool.setdefault(tool, []).append((seconds, status))
        by_reviewer.setdefault(reviewer, []).append((seconds, status))
    return {
        "window": len(rows),
        "limit": window,
        "overall_median_s": statistics.median(everything) if everything else None,
        "by_tool": _summarise(by_tool),
        "by_reviewer": _summarise(by_reviewer),
    }


def _summarise(groups: dict[str, list[tuple[float, str]]]) -> list[Latency]:
    out = [
        Latency(
            key=key,
            decisions=len(samples),
            median_s=statistics.median(s for s, _ in samples),
            approved=sum(1 for _, status in samples if status == ApprovalStatus.APPROVED),
            rejected=sum(1 for _, status in samples if status == ApprovalStatus.REJECTED),
        )
        for key, samples in groups.items()
    ]
    return sorted(out, key=lambda item: (-item.decisions, item.key))
