"""Live approvals over a websocket: /ws/approvals/?view=inbox|detail|count.

The database is the log. The consumer tails the append-only AuditRecord table by id (every request,
decision, escalation, vote, comment and view appends one), re-reads the approvals those records
touch, and sends fragments rendered from the page's own partials: new cards for the inbox, cards
that left it (with who decided and how), the detail's decision panel, policy and audit trail, and the
pending count of the navigation bar. Wake-ups only make it fast: a poke on the channel-layer group
"approvals" (approvals.live, with Redis), any NOTIFY of the engine on PostgreSQL (runs.listen: a
request or a decision always commits with a run event), or else a poll (runs.consumers.POLL_SECONDS).

Tailing a global id on PostgreSQL can skip a row whose transaction committed after a later id's
(STACK-NOTES T14), so ids missing from a batch are re-read for GAP_SECONDS, and every RESYNC_SECONDS
the cards on screen are checked against the inbox query itself.

Permission is checked on connect: accept, then close with 4403 (T15). Clients send nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection
from django.db.models import Q
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from approvals import decisions, inbox, presenters
from approvals.forms import InboxFilterForm
from approvals.live import INBOX_GROUP
from approvals.models import Approval, ApprovalStatus, AuditRecord
from runs.consumers import CLOSE_BAD_REQUEST, CLOSE_NOT_FOUND, LiveConsumer


SETTLE_SECONDS = {"inbox": 0.1, "detail": 0.1, "count": 1.0}  # a burst of wake-ups costs one read
RESYNC_SECONDS = 15.0
GAP_SECONDS = 10.0
AUDIT_BATCH = 500
MAX_CARDS = 500
NEW_OVERLAP = dt.timedelta(seconds=5)  # created_at is the transaction's clock, not commit order
STATE_ACTIONS = {"requested", "approved", "rejected", "cancelled", "escalated", "voted"}
VIEWS = {"inbox", "detail", "count"}



class InboxConsumer(LiveConsumer):
    """The run browser's live plumbing (accept, then 4403; wake-ups; disconnect) with the inbox's own
    permission and tail."""

    group = INBOX_GROUP
    run_id = None  # every run's NOTIFY wakes the inbox

    async def authorise(self, user: Any) -> bool:
        return bool(await database_sync_to_async(inbox.can_review)(user))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Decisions are CSRF-protected POSTs, never socket messages (STACK-NOTES Q7).
        await self.close(code=CLOSE_BAD_REQUEST)

    async def inbox_poke(self, message: dict[str, Any]) -> None:
        """approvals.live: only a wake-up; the data comes from the database."""
        self.wake.set()

    def may_watch(self, user: Any) -> bool:
        return bool(inbox.can_review(user))

    async def settle(self) -> None:
        await asyncio.sleep(SETTLE_SECONDS[self.view])  # a burst of wake-ups costs one read

    # -- setup -------------------------------------------------------------------------------------------
    def prepare(self) -> int | None:
        query = QueryDict(self.scope.get("query_string", b"").decode("latin-1"))
        self.view = query.get("view", "count")
        if self.view not in VIEWS:
            return CLOSE_BAD_REQUEST
        raw_cursor = query.get("audit", "")
        if raw_cursor and (not raw_cursor.isdigit() or len(raw_cursor) > 18):
            return CLOSE_BAD_REQUEST
        self.cursor = int(raw_cursor) if raw_cursor else (
            AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0
        )
        self.gaps: dict[int, float] = {}
        self.count: int | None = None  # the navigation count, and the inbox's filtered total, as last sent
        self.total: int | None = None
        self.resync_at = time.monotonic() + RESYNC_SECONDS
        self.approval_id: int | None = None
        if self.view == "detail":
            raw = query.get("approval", "")
            if not raw.isdigit() or len(raw) > 18:
                return CLOSE_BAD_REQUEST
            self.approval_id = int(raw)
            found = Approval.objects.filter(pk=self.approval_id).values_list("status", flat=True).first()
            if found is None:
                return CLOSE_NOT_FOUND
            self.status = found
        if self.view == "inbox":
            form = InboxFilterForm(query)
            if not form.is_valid():
                return CLOSE_BAD_REQUEST
            self.filters = form.filters()
            try:
                ids = [int(x) for x in query.get("ids", "").split(",") if x]
                since_raw = query.get("since", "")
                self.since = dt.datetime.fromisoformat(since_raw) if since_raw else timezone.now()
            except (ValueError, OverflowError):
                return CLOSE_BAD_REQUEST
            if self.since.tzinfo is None:
                self.since = self.since.replace(tzinfo=dt.UTC)
            self.shown: set[int] = set(ids[:MAX_CARDS])
            # Oldest first with more pages: a new approval belongs at the end of the last page, not here.
            self.insert_new = not self.filters.oldest_first or query.get("more") != "1"
        return None

    # -- one round -------------------------------------------------------------------------------------
    def next_batch(self) -> tuple[str, bool]:
        changed, touched, more = self.read_audit()
        resync = time.monotonic() >= self.resync_at
        if resync:
            self.resync_at = time.monotonic() + RESYNC_SECONDS
        parts: list[str] = []
        if self.view == "inbox" and (changed or resync or self.total is None):
            parts += self.inbox_changes(changed, resync)
            total = inbox.filtered(self.user, self.filters, timezone.now()).count()
            if total != self.total:
                self.total = total
                parts.append(render_to_string("approvals/_total.html", {"total": total, "params": self.filters.params()}))
        if self.view == "detail" and (touched or resync):
            parts += self.detail_changes(touched or resync)
        if changed or resync or self.count is None:
            count = inbox.pending_count(self.user)
            if count != self.count:
                self.count = count
                parts.append(render_to_string("approvals/_count.html", {"count": count}))
        if parts and self.view != "count":
            parts.append(f'<span id="inbox-cursor" data-audit="{self.cursor}" hidden></span>')
        return "".join(parts), more

    def read_audit(self) -> tuple[set[int], bool, bool]:
        """Audit records after the cursor (and the gaps still open): the approvals whose state
        changed, whether this page's approval was touched at all, whether more rows wait."""
        where = Q(id__gt=self.cursor)
        if self.gaps:
            where |= Q(id__in=list(self.gaps))
        rows = list(AuditRecord.objects.filter(where).order_by("id").values_list("id", "approval_id", "action")[:AUDIT_BATCH])
        now = time.monotonic()
        fresh = [row[0] for row in rows if row[0] > self.cursor]
        for pk, *_ in rows:
            self.gaps.pop(pk, None)
        if fresh and connection.vendor == "postgresql":
            seen = set(fresh)
            for missing in range(self.cursor + 1, fresh[-1]):
                if missing not in seen and len(self.gaps) < 1000:
                    self.gaps[missing] = now
        self.gaps = {pk: at for pk, at in self.gaps.items() if now - at < GAP_SECONDS}
        if fresh:
            self.cursor = fresh[-1]
        changed = {approval_id for _, approval_id, action in rows if action in STATE_ACTIONS}
        touched = self.approval_id is not None and any(approval_id == self.approval_id for _, approval_id, _ in rows)
        return changed, touched, len(rows) == AUDIT_BATCH

    def inbox_changes(self, changed: set[int], resync: bool) -> list[str]:
        now = timezone.now()
        matching_query = inbox.filtered(self.user, self.filters, now)
        candidates = set(changed) | (self.shown if resync else set())
        matching = set(matching_query.filter(pk__in=candidates).values_list("pk", flat=True)) if candidates else set()
        new = matching - self.shown if self.insert_new else set()
        if resync and self.insert_new and not self.filters.oldest_first:
            newest = matching_query.filter(created_at__gte=self.since - NEW_OVERLAP).order_by("-created_at", "-id")
            new |= set(newest.exclude(pk__in=list(self.shown)).values_list("pk", flat=True)[: inbox.PAGE_SIZE])
        updated = (matching & self.shown) & changed
        gone = (candidates & self.shown) - matching
        room = max(MAX_CARDS - len(self.shown), 0)
        new = set(sorted(new)[-room:]) if room else set()
        wanted = new | updated | gone
        if not wanted:
            return []
        approvals = {
            a.pk: a for a in Approval.objects.filter(pk__in=wanted).select_related("run", "run__started_by", "decided_by")
            .defer(*inbox.RUN_BULK)
        }
        votes = inbox.vote_counts(list(new | updated))
        parts = []
        # New cards go in at the top (newest first) or the end (oldest first), oldest of them first.
        upsert = "beforeend:#inbox-cards" if self.filters.oldest_first else "afterbegin:#inbox-cards"
        for pk in sorted(new, key=lambda pk: (approvals[pk].created_at, pk)):
            parts.append(self.card(approvals[pk], votes, upsert=upsert))
        for pk in updated:
            parts.append(self.card(approvals[pk], votes, upsert=upsert))
        for pk in gone:
            if pk in approvals:
                parts.append(self.card(approvals[pk], votes, gone=True))
        self.shown = (self.shown | new) - gone
        return parts

    def card(self, approval: Approval, votes: dict[int, int], *, gone: bool = False, upsert: str = "") -> str:
        context = presenters.card_context(approval, self.user, votes, gone=gone, live=True, upsert=upsert)
        # No CSRF token in socket frames (compressed, like BREACH's targets): htmx sends the page's
        # token in the X-CSRFToken header of every request (base.html's hx-headers).
        return render_to_string("approvals/_card.html", context)

    def detail_changes(self, touched: bool) -> list[str]:
        assert self.approval_id is not None
        approval = decisions.get_approval(self.approval_id)
        parts = [render_to_string("approvals/_audit_list.html", {"audit": presenters.audit_entries(approval)})]
        decision = presenters.decision_context(approval, self.user)
        parts.append(render_to_string("approvals/_status.html", {"decision": decision}))
        parts.append(render_to_string("approvals/_policy.html", {"policy": presenters.policy_view(approval)}))
        if approval.status != self.status:
            # Only when the state changed: re-rendering the forms would wipe what the reviewer typed.
            self.status = approval.status
            if approval.status != ApprovalStatus.PENDING:
                decision["message"] = f"{presenters.outcome_text(approval)}."
                decision["message_tone"] = "good" if approval.decided_by_id == getattr(self.user, "pk", None) else "bad"
            parts.append(render_to_string("approvals/_decision.html", {"decision": decision}))
        return parts
