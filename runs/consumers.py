"""Live updates over websockets: /ws/runs/<id>/ (one run) and /ws/runs/ (the list).

The database is the log; a consumer never trusts a message to carry data (T13). The detail consumer
keeps a cursor (the last event seq the browser has, `?after=<seq>`), reads the events after it,
renders the affected fragments from the same partials as the page, sends them, and waits for a
wake-up (PostgreSQL NOTIFY through runs.listen, a Redis poke through the channel layer) or for the
poll interval. Fragments carry `data-upsert`: the browser replaces the element with that id or
inserts it (static/js/durable.js), so a replay after a reconnect is harmless.

Permission is checked on connect: accept, then close with 4403 (T15: a refusal before accept
reaches the browser as 1006, which htmx retries forever). Clients send nothing; a binary or large
frame closes the socket with 4400.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from durable import live
from durable.models import Event, Run
from runs import access, listen, listing, presenters
from runs.forms import RunFilterForm

log = logging.getLogger("runs.consumers")

MAX_CLIENT_FRAME = 1024
EVENT_BATCH = 200
MAX_LIST_ROWS = 200
POLL_SECONDS = 0.5  # SQLite, or while no wake-up source works
SAFETY_POLL_SECONDS = 2.0  # with NOTIFY or Redis pokes: in case one was lost
LIST_MIN_INTERVAL = 0.3  # coalesce bursts of wake-ups on the list
COUNTS_MIN_INTERVAL = 2.0  # the GROUP BY of the counts bar runs at most this often per socket
NEW_RUN_OVERLAP = dt.timedelta(seconds=5)
RECHECK_SECONDS = 60.0  # how often a live socket checks that its user may still watch  # created_at is the transaction's clock, not commit order

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SERVER_ERROR = 1011  # htmx's ws extension reconnects after this one


class LiveConsumer(AsyncWebsocketConsumer):
    """Shared plumbing: permission on connect, the wake-up sources, the tail loop."""

    group: str = ""
    run_id: int | None = None  # the run whose NOTIFYs wake us; None means every run

    async def connect(self) -> None:
        await self.accept()
        self.wake = asyncio.Event()
        self.loop_task: asyncio.Task[None] | None = None
        self.joined = False
        self.user = self.scope.get("user")
        if not await self.authorise(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        problem = await database_sync_to_async(self.prepare)()
        if problem:
            await self.close(code=problem)
            return
        if self.channel_layer is not None:
            await self.channel_layer.group_add(self.group, self.channel_name)
        listen.hub().subscribe(self.run_id, self.wake)
        self.joined = True
        self.loop_task = asyncio.create_task(self.tail())

    async def authorise(self, user: Any) -> bool:
        """Whether `user` may watch; subclasses for other pages check their own permission."""
        if not await database_sync_to_async(access.can_view_runs)(user):
            return False
        self.viewer = presenters.Viewer(
            can_control=await database_sync_to_async(access.can_control_runs)(user),
            can_see_tracebacks=await database_sync_to_async(access.can_see_tracebacks)(user),
        )
        return True

    async def disconnect(self, code: int) -> None:
        if self.loop_task is not None:
            self.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.loop_task
        if getattr(self, "joined", False):
            listen.hub().unsubscribe(self.run_id, self.wake)
            if self.channel_layer is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The browser has nothing to say: controls are CSRF-protected POSTs, not socket messages.
        if bytes_data is not None or text_data is None or len(text_data) > MAX_CLIENT_FRAME:
            await self.close(code=CLOSE_BAD_REQUEST)

    async def run_poke(self, message: dict[str, Any]) -> None:
        """A channel-layer poke (durable.live): only a wake-up, the data comes from the database."""
        self.wake.set()

    def poll_seconds(self) -> float:
        fast = listen.hub().listening or live.redis_enabled()
        return SAFETY_POLL_SECONDS if fast else POLL_SECONDS

    async def tail(self) -> None:
        checked = time.monotonic()
        try:
            while True:
                if time.monotonic() - checked > RECHECK_SECONDS:
                    # A socket outlives its page's permission check: log out, a revoked role or a
                    # deactivated account end it within RECHECK_SECONDS.
                    if not await database_sync_to_async(self.still_allowed)():
                        await self.close(code=CLOSE_FORBIDDEN)
                        return
                    checked = time.monotonic()
                self.wake.clear()  # before reading, so a wake-up during the read is kept
                html, more = await database_sync_to_async(self.next_batch)()
                if html:
                    await self.send(text_data=html)
                if more:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds())
                await self.settle()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live updates failed for %s", self.scope.get("path"))
            await self.close(code=CLOSE_SERVER_ERROR)

    async def settle(self) -> None:
        """Hook: the list waits a little so that a burst of wake-ups costs one refresh."""

    def still_allowed(self) -> bool:
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated:
            return False
        if session is not None and session.session_key and not session.exists(session.session_key):
            return False  # logged out (or the session expired)
        fresh = type(user)._default_manager.filter(pk=user.pk).first()
        return self.may_watch(fresh)

    def may_watch(self, user: Any) -> bool:
        """The permission re-checked while the socket lives (the inbox checks its own)."""
        return access.can_view_runs(user)

    def prepare(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def next_batch(self) -> tuple[str, bool]:  # pragma: no cover - overridden
        raise NotImplementedError


def _query(scope: dict[str, Any]) -> QueryDict:
    return QueryDict(scope.get("query_string", b"").decode("latin-1"))


class RunConsumer(LiveConsumer):
    """One run: events, steps, recoveries, header, axis and result, after the browser's cursor."""

    def prepare(self) -> int | None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.group = live.group_name(self.run_id)
        raw = _query(self.scope).get("after", "0") or "0"
        if not raw.isdigit() or len(raw) > 10:
            return CLOSE_BAD_REQUEST
        self.cursor = int(raw)
        if not Run.objects.filter(pk=self.run_id).exists():
            return CLOSE_NOT_FOUND
        return None

    def next_batch(self) -> tuple[str, bool]:
        events = list(Event.objects.filter(run_id=self.run_id, seq__gt=self.cursor).order_by("seq")[:EVENT_BATCH])
        if not events:
            return "", False
        # Read after the events: the run and its steps are at least as new as the last event sent.
        run = Run.objects.select_related("started_by", "parent").get(pk=self.run_id)
        html = self.render(run, events)
        self.cursor = events[-1].seq
        return html, len(events) == EVENT_BATCH

    def render(self, run: Run, events: list[Event]) -> str:
        now = timezone.now()
        types = {e.type for e in events}
        step_seqs = {
            e.data.get("seq") for e in events
            if isinstance(e.data, dict) and (e.type.startswith("step.") or e.type == "run.waiting")
        }
        steps = list(presenters.steps_of(run).filter(seq__in=[s for s in step_seqs if isinstance(s, int)]))
        axis = presenters.axis_for(run, steps, now)
        parts = [render_to_string("runs/_header.html", presenters.header_context(run, self.viewer, now))]
        parts.append(render_to_string("runs/_axis.html", {"axis": axis}))
        parts.append(render_to_string("runs/_step_count.html", {"run": run}))
        parts += [
            render_to_string("runs/_step.html", {"item": presenters.step_view(s, axis.origin, self.viewer),
                                                 "run": run, "live": True})
            for s in steps
        ]
        if types & {"run.recovered", "run.dead_lettered", "run.claimed"}:
            parts += [
                render_to_string("runs/_recovery.html", {"item": r, "live": True})
                for r in presenters.recoveries_of(run, axis.origin)
            ]
        parts += [render_to_string("runs/_event.html", {**presenters.event_context(e), "live": True}) for e in events]
        if types & {"run.succeeded", "run.failed", "run.cancelled", "run.retried", "run.dead_lettered"}:
            parts.append(render_to_string("runs/_result.html", presenters.result_context(run, self.viewer)))
        if any(e.type in ("run.waiting", "run.woken") for e in events):
            ancestors, children, truncated = presenters.run_family(run)
            parts.append(render_to_string("runs/_children.html", {
                "run": run, "ancestors": ancestors, "children": children, "children_truncated": truncated,
            }))
        parts.append(f'<span id="live-cursor" data-seq="{events[-1].seq}" hidden></span>')
        return "".join(parts)


class RunListConsumer(LiveConsumer):
    """The list: rows the page shows change in place; new matching runs appear on top (first page,
    newest first); the counts bar follows, at most every COUNTS_MIN_INTERVAL seconds.

    Query: the page's filters, plus `ids` (rows on the page, added by the browser at connect),
    `since` (when the page was rendered) and `live_new=1` when new runs belong on this page.
    """

    group = live.RUNS_GROUP

    def prepare(self) -> int | None:
        query = _query(self.scope)
        self.form = RunFilterForm(query)
        if not self.form.is_valid():
            return CLOSE_BAD_REQUEST
        try:
            ids = [int(x) for x in query.get("ids", "").split(",") if x]
            since_raw = query.get("since", "")
            self.since = dt.datetime.fromisoformat(since_raw) if since_raw else timezone.now()
        except (ValueError, OverflowError):
            return CLOSE_BAD_REQUEST
        if self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=dt.UTC)
        self.known: dict[int, tuple[Any, ...]] = {pk: () for pk in ids[:MAX_LIST_ROWS]}
        self.live_new = query.get("live_new") == "1" and self.form.cleaned_data.get("sort") != "asc"
        self.counts_at = 0.0
        self.counts_due = False
        return None

    async def settle(self) -> None:
        await asyncio.sleep(LIST_MIN_INTERVAL)

    def poll_seconds(self) -> float:
        """Wake in time for counts held back by the COUNTS_MIN_INTERVAL throttle."""
        seconds = super().poll_seconds()
        if self.counts_due:
            seconds = min(seconds, max(0.0, self.counts_at + COUNTS_MIN_INTERVAL - time.monotonic()))
        return seconds

    def next_batch(self) -> tuple[str, bool]:
        changed = self.changed_rows()
        new = self.new_rows()
        if changed or new:
            self.counts_due = True
        parts: list[str] = []
        if changed:
            parts.append(render_to_string("runs/_rows.html", {"runs": changed, "live": True}))
        if new:
            # Each row is inserted at the top, so send the oldest first.
            parts.append(render_to_string("runs/_rows.html", {"runs": list(reversed(new)), "live": True}))
        if self.counts_due and time.monotonic() - self.counts_at >= COUNTS_MIN_INTERVAL:
            parts.append(render_to_string("runs/_counts.html", {
                "counts": listing.status_counts(self.form), "filters": self.form.filter_params(),
                "form": self.form, "live": True,
            }))
            self.counts_at, self.counts_due = time.monotonic(), False
        return "".join(parts), False

    def changed_rows(self) -> list[Run]:
        if not self.known:
            return []
        rows = Run.objects.filter(pk__in=list(self.known)).values_list("id", "status", "next_seq", "updated_at")
        changed = [pk for pk, *signature in rows if tuple(signature) != self.known[pk]]
        if not changed:
            return []
        runs = list(self.rows_queryset().filter(pk__in=changed).order_by("-created_at", "-id"))
        for run in runs:
            self.known[run.pk] = (run.status, run.next_seq, run.updated_at)
        return runs

    def new_rows(self) -> list[Run]:
        if not self.live_new or len(self.known) >= MAX_LIST_ROWS:
            return []
        queryset = listing.filtered_runs(self.form).filter(created_at__gte=self.since - NEW_RUN_OVERLAP)
        runs = list(
            queryset.exclude(pk__in=list(self.known)).select_related("started_by").only(*listing.LIST_FIELDS)
            .order_by("-created_at", "-id")[: MAX_LIST_ROWS - len(self.known)]
        )
        for run in runs:
            self.known[run.pk] = (run.status, run.next_seq, run.updated_at)
        return runs

    def rows_queryset(self) -> Any:
        return Run.objects.select_related("started_by").only(*listing.LIST_FIELDS)

