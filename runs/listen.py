"""Wake-ups for the websocket consumers of one daphne process.

The event table is the truth and every consumer re-reads it; a wake-up only says "look now". With
PostgreSQL, every checkpoint transaction sends `pg_notify('durable_events', '<run>:<seq>')`,
delivered at commit. One LISTEN connection per process (psycopg AsyncConnection, on the server's
event loop) fans each notification out to the asyncio.Events of that run's consumers and of every
list consumer. Redis pokes arrive through the channel layer instead (the consumers' `run_poke`
handler), and plain SQLite has neither: consumers poll.

The connection opens with the first subscriber and closes when nobody has subscribed for
IDLE_SECONDS, or when its event loop stops (test loops), so it never holds a database open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from django.db import connections

log = logging.getLogger("runs.listen")

CHANNEL = "durable_events"
IDLE_SECONDS = 30.0
RETRY_SECONDS = 1.0


def is_postgres() -> bool:
    return connections["default"].vendor == "postgresql"


def connection_params() -> dict[str, Any]:
    """Django's own connection parameters (so the test database is used in tests), minus the
    options that only make sense for Django's cursors."""
    params = dict(connections["default"].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "client_encoding", "server_side_binding"):
        params.pop(key, None)
    return params


class Hub:
    """Per event loop: who waits for which run, and the LISTEN task that wakes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.by_run: dict[int, set[asyncio.Event]] = {}
        self.every: set[asyncio.Event] = set()  # list consumers: any run
        self.listening = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None

    def subscribe(self, run_id: int | None, event: asyncio.Event) -> None:
        if run_id is None:
            self.every.add(event)
        else:
            self.by_run.setdefault(run_id, set()).add(event)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if is_postgres() and (self._task is None or self._task.done()):
            self._task = self.loop.create_task(self._listen(connection_params()), name="durable-listen")

    def unsubscribe(self, run_id: int | None, event: asyncio.Event) -> None:
        if run_id is None:
            self.every.discard(event)
        else:
            waiting = self.by_run.get(run_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self.by_run[run_id]
        if not self.by_run and not self.every and self._task is not None and self._idle is None:
            self._idle = self.loop.call_later(IDLE_SECONDS, self._stop_if_idle)

    def wake(self, run_id: int) -> None:
        for event in self.by_run.get(run_id, ()):
            event.set()
        for event in self.every:
            event.set()

    def wake_all(self) -> None:
        for events in self.by_run.values():
            for event in events:
                event.set()
        for event in self.every:
            event.set()

    def _stop_if_idle(self) -> None:
        self._idle = None
        if not self.by_run and not self.every and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _listen(self, params: dict[str, Any]) -> None:
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
            except Exception as exc:  # noqa: BLE001 - any failure: log, poll meanwhile, retry
                log.warning("LISTEN %s: cannot connect (%s); consumers poll meanwhile", CHANNEL, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening = True
                self.wake_all()  # anything committed while we were not listening
                async for note in conn.notifies():
                    run_part, _, _ = note.payload.partition(":")
                    if run_part.isdigit():
                        self.wake(int(run_part))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: log, poll meanwhile, reconnect
                log.warning("LISTEN %s lost (%s); reconnecting", CHANNEL, exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close())
            await asyncio.sleep(RETRY_SECONDS)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (daphne has one; each async test has its own)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(loop)
    return found
