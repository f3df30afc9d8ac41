"""Waiting for a run's next event, for the long-poll and server-sent-events endpoints.

The Event table is the truth: a waiter always re-reads it, so a lost wake-up costs latency, never an
event. The wake-ups only make it fast:

- PostgreSQL: every checkpoint transaction sends NOTIFY durable_events '<run>:<seq>' (journal.notify),
  delivered at commit. The event loop's hub (runs.listen, shared with the websocket consumers) holds
  one LISTEN connection and wakes the waiters of that run.
- Redis channel layer (REDIS_URL): workers poke the group `run-<id>` after commit (durable.live).
- Otherwise (plain SQLite) the waiter polls every POLL_SECONDS.

With a wake-up source the waiter still re-reads every SAFETY_POLL_SECONDS, in case the listener's
connection dropped between a commit and its NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import sync_to_async

from durable import live
from durable.models import Event
from runs import listen

log = logging.getLogger("runs.tail")

POLL_SECONDS = 0.25
SAFETY_POLL_SECONDS = 2.0


def has_events_after(run_id: int, after: int) -> bool:
    # Index: event_run_seq (run_id, seq) unique constraint.
    return Event.objects.filter(run_id=run_id, seq__gt=after).exists()


async def wait_for_events(run_id: int, after: int, timeout: float) -> bool:
    """Return True as soon as the run has an event numbered above `after`, False after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    woken = asyncio.Event()
    # Subscribe before the first read, so an event committed between the read and the wait wakes us.
    hub = listen.hub() if listen.is_postgres() else None
    if hub is not None:
        hub.subscribe(run_id, woken)
    redis_task = asyncio.create_task(_redis_wakeups(run_id, woken)) if live.redis_enabled() else None
    try:
        while True:
            if await sync_to_async(has_events_after)(run_id, after):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            fast_wake = hub.listening if hub else redis_task is not None and not redis_task.done()
            interval = SAFETY_POLL_SECONDS if fast_wake else POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(remaining, interval))
            woken.clear()
    finally:
        if hub is not None:
            hub.unsubscribe(run_id, woken)
        if redis_task is not None:
            redis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await redis_task


async def _redis_wakeups(run_id: int, woken: asyncio.Event) -> None:
    """Join the run's channel-layer group and set `woken` on every poke. Ends quietly on errors: the
    waiter then polls."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    group = live.group_name(run_id)
    channel = await layer.new_channel("tail.")
    await layer.group_add(group, channel)
    try:
        while True:
            await layer.receive(channel)
            woken.set()
    except Exception as exc:  # noqa: BLE001  Redis away: the waiter polls
        log.warning("channel layer wake-ups for run %s stopped: %s", run_id, exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(layer.group_discard(group, channel))
