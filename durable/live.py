"""Wake-ups for live viewers. The event table is the truth; these pokes only cut latency (T13).

With the Redis channel layer a worker pokes the run's group after commit through one persistent
event loop thread per process (a throwaway loop per call would open a Redis connection per event,
T12). Without Redis there is nothing to do here: PostgreSQL viewers hear the NOTIFY sent in the
checkpoint transaction, SQLite viewers poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_lock = threading.Lock()


def group_name(run_id: int) -> str:
    return f"run-{run_id}"


RUNS_GROUP = "runs"


def redis_enabled() -> bool:
    return "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower()


def poke_on_commit(run_id: int, seq: int) -> None:
    if redis_enabled():
        transaction.on_commit(lambda: poke(run_id, seq))


def poke(run_id: int, seq: int) -> None:
    message = {"type": "run.poke", "run_id": run_id, "seq": seq}
    _submit(group_name(run_id), message)
    _submit(RUNS_GROUP, message)


def send_group(group: str, message: dict[str, Any]) -> None:
    """Send a poke to any channel-layer group from sync code (after commit)."""
    _submit(group, message)


def _submit(group: str, message: dict[str, Any]) -> None:
    from channels.layers import get_channel_layer

    loop = _background_loop()
    layer = get_channel_layer()
    if layer is None:
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
    future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if future.exception() is not None:
        log.warning("live poke failed: %s", future.exception())


def _background_loop() -> asyncio.AbstractEventLoop:
    """One loop per process, created lazily after fork (a forked loop thread does not survive)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
            threading.Thread(target=_loop.run_forever, name="durable-live", daemon=True).start()
        return _loop
