"""What a reviewer's inbox holds: the pending approvals of their groups, filtered and paged.

One place for the query, so the page, the websocket consumer, the JSON API and the benchmark agree on
what "my pending approvals" means. Superusers see every group's approvals. The index approval_inbox
(status, group, -created_at) serves both the page (newest or oldest first) and the count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet, Subquery

from approvals.decisions import DECIDE_PERMISSION
from approvals.models import Approval, ApprovalStatus, Vote
from approvals.policies import ApprovalPolicy

PAGE_SIZE = 50
RUN_BULK = ("run__input", "run__output", "run__error")  # a card never shows them; they can be large
AGES: dict[str, dt.timedelta] = {
    "5m": dt.timedelta(minutes=5),
    "1h": dt.timedelta(hours=1),
    "1d": dt.timedelta(days=1),
}


def can_review(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.has_perm(DECIDE_PERMISSION))


def group_names(user: Any) -> list[str] | None:
    """The groups whose approvals the user decides; None means all of them (superuser)."""
    if user.is_superuser:
        return None
    cached = getattr(user, "_approval_groups", None)
    if cached is None:
        cached = list(user.groups.values_list("name", flat=True))
        user._approval_groups = cached
    return cached


def pending_for(user: Any) -> QuerySet[Approval]:
    approvals = Approval.objects.filter(status=ApprovalStatus.PENDING)
    groups = group_names(user)
    return approvals if groups is None else approvals.filter(group__in=groups)


def pending_count(user: Any) -> int:
    return pending_for(user).count() if can_review(user) else 0


@dataclass(frozen=True)
class Filters:
    """Inbox filters, already validated (approvals.forms.InboxFilterForm.filters())."""

    workflow: str = ""
    tool: str = ""
    age: str = ""
    run: int | None = None
    oldest_first: bool = False

    def apply(self, approvals: QuerySet[Approval], now: dt.datetime) -> QuerySet[Approval]:
        if self.workflow:
            approvals = approvals.filter(run__workflow=self.workflow)
        if self.tool:
            approvals = approvals.filter(tool=self.tool)
        if self.age in AGES:
            approvals = approvals.filter(created_at__lte=now - AGES[self.age])
        if self.run is not None:
            approvals = approvals.filter(run_id=self.run)
        return approvals

    def params(self) -> list[tuple[str, str]]:
        """As query parameters (for links, the websocket URL and "load more")."""
        items = [("workflow", self.workflow), ("tool", self.tool), ("age", self.age),
                 ("run", "" if self.run is None else str(self.run)), ("sort", "asc" if self.oldest_first else "")]
        return [(name, value) for name, value in items if value]


def filtered(user: Any, filters: Filters, now: dt.datetime) -> QuerySet[Approval]:
    return filters.apply(pending_for(user), now)


def decode_cursor(cursor: str) -> int | None:
    """A page cursor is the id of the last approval of the previous page."""
    return int(cursor) if cursor.isdigit() and 0 < len(cursor) <= 18 else None


@dataclass
class Page:
    items: list[Approval]
    next_cursor: str | None


def page(user: Any, filters: Filters, now: dt.datetime, *, cursor: int | None = None,
         limit: int | None = None) -> Page:
    """Keyset pages on (created_at, id): stable while approvals arrive and leave, and a deep page
    costs what the first does. The cursor row's created_at is compared inside the database, so the
    stored timestamp is never round-tripped through Python (SQLite compares them as text)."""
    approvals = filtered(user, filters, now).select_related("run", "run__started_by").defer(*RUN_BULK)
    anchor = Subquery(Approval.objects.filter(pk=cursor or 0).values("created_at")[:1])
    if filters.oldest_first:
        approvals = approvals.order_by("created_at", "id")
        if cursor:
            approvals = approvals.filter(Q(created_at__gt=anchor) | Q(created_at=anchor, id__gt=cursor))
    else:
        approvals = approvals.order_by("-created_at", "-id")
        if cursor:
            approvals = approvals.filter(Q(created_at__lt=anchor) | Q(created_at=anchor, id__lt=cursor))
    limit = limit or PAGE_SIZE
    items = list(approvals[: limit + 1])
    next_cursor = None
    if len(items) > limit:
        items = items[:limit]
        next_cursor = str(items[-1].pk)
    return Page(items, next_cursor)


def vote_counts(approval_ids: list[int]) -> dict[int, int]:
    """Approvals so far toward each quorum (one query for a whole page)."""
    if not approval_ids:
        return {}
    rows = Vote.objects.filter(approval_id__in=approval_ids).values("approval_id").annotate(n=Count("id"))
    return {row["approval_id"]: row["n"] for row in rows}


def own_run(approval: Approval, user: Any) -> bool:
    """The four-eyes rule applies and the user started the run: someone else must decide."""
    rules = ApprovalPolicy.from_dict(approval.policy)
    return bool(rules.four_eyes and approval.run.started_by_id is not None and approval.run.started_by_id == user.pk)


def distinct_tools(user: Any, limit: int = 200) -> list[str]:
    return list(pending_for(user).order_by("tool").values_list("tool", flat=True).distinct()[:limit])
