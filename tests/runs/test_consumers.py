"""The websocket consumers: cursor replay, live checkpoints, permissions, the list, wake-ups."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from durable import control, journal, live
from durable.models import Run, Status
from runs import consumers, routing
from tests.conftest import drain
from tests.runs.ui import make_run

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def connect(path: str, user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(routing.websocket_urlpatterns), path)
    communicator.scope["user"] = user or AnonymousUser()
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator: WebsocketCommunicator, needle: str, timeout: float = 5.0) -> str:
    """Everything received until `needle` shows up (or fail after `timeout`)."""
    received = ""
    deadline = time.monotonic() + timeout
    while needle not in received:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} not received; got {received[-500:]!r}"
        message = await communicator.receive_output(timeout=remaining)
        assert message["type"] == "websocket.send", message
        received += message["text"]
    return received


async def closed_with(communicator: WebsocketCommunicator) -> int:
    message = await communicator.receive_output(timeout=3)
    assert message["type"] == "websocket.close"
    return int(message["code"])


# -- one run ------------------------------------------------------------------------------------------
async def test_it_sends_what_the_browser_missed_after_its_cursor(users: Any) -> None:
    run = await database_sync_to_async(make_run)(steps=3)  # events 1..4: created, 3 x step.completed
    communicator = await connect(f"/ws/runs/{run.pk}/?after=2", users["operator"])
    html = await receive_until(communicator, 'id="live-cursor"')
    assert 'id="ev-3"' in html and 'id="ev-4"' in html and 'id="ev-2"' not in html
    assert 'id="step-1"' in html and 'id="step-2"' in html and 'id="step-0"' not in html
    assert 'data-seq="4"' in html
    assert html.count('data-upsert="beforeend:#steps"') == 2  # replays replace by id, never duplicate
    assert 'id="run-header"' in html and 'id="timeline-scale"' in html
    assert await communicator.receive_nothing(timeout=0.6)  # nothing new: nothing sent
    await communicator.disconnect()


async def test_it_sends_checkpoints_as_they_commit(users: Any, define: Any) -> None:
    @define("ui.two_steps")
    def two_steps(ctx: Any, input: Any) -> Any:
        first = ctx.step(lambda: {"n": 1}, name="first")
        return ctx.step(lambda: {"n": first["n"] + 1}, name="second")

    run = await database_sync_to_async(control.start)("ui.two_steps", {})
    communicator = await connect(f"/ws/runs/{run.pk}/?after={run.event_seq}", users["operator"])
    assert await communicator.receive_nothing(timeout=0.3)
    await database_sync_to_async(drain)(run.pk)
    html = await receive_until(communicator, "run.succeeded")
    assert 'id="step-0"' in html and 'id="step-1"' in html and "second" in html
    assert 'data-status="succeeded"' in html  # the header follows
    assert 'id="run-result"' in html  # and the output appears
    await communicator.disconnect()


async def test_it_shows_tracebacks_over_the_socket_only_to_controllers(users: Any) -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py"\nsecret-token-123\nValueError: broke'
    run = await database_sync_to_async(make_run)(steps=1, status=Status.FAILED, error=trace, events=False)
    await database_sync_to_async(journal_event)(run.pk, "run.failed", {"error": "ValueError: broke"})
    for role, sees in (("operator", False), ("runadmin", True)):
        communicator = await connect(f"/ws/runs/{run.pk}/", users[role])
        html = await receive_until(communicator, 'id="live-cursor"')
        assert "ValueError: broke" in html
        assert ("secret-token-123" in html) is sees
        await communicator.disconnect()


def journal_event(run_id: int, kind: str, data: dict[str, Any]) -> None:
    from django.db import transaction

    with transaction.atomic():
        journal.append_events(run_id, [(kind, data)])


@pytest.mark.parametrize("role", ["anonymous", "nobody"])
async def test_it_closes_with_4403_for_a_user_without_permission(users: Any, role: str) -> None:
    run = await database_sync_to_async(make_run)(steps=1)
    for path in (f"/ws/runs/{run.pk}/", "/ws/runs/"):
        communicator = await connect(path, users[role])
        assert await closed_with(communicator) == 4403


async def test_it_closes_with_4404_for_an_unknown_run(users: Any) -> None:
    communicator = await connect("/ws/runs/987654/", users["operator"])
    assert await closed_with(communicator) == 4404


async def test_it_closes_with_4400_for_a_bad_cursor_or_filter(users: Any) -> None:
    run = await database_sync_to_async(make_run)(steps=1)
    for path in (f"/ws/runs/{run.pk}/?after=-3", f"/ws/runs/{run.pk}/?after=abc", "/ws/runs/?status=bogus",
                 "/ws/runs/?ids=1,x", "/ws/runs/?since=yesterday"):
        communicator = await connect(path, users["operator"])
        assert await closed_with(communicator) == 4400, path


async def test_it_closes_with_4400_on_a_large_or_binary_frame(users: Any) -> None:
    run = await database_sync_to_async(make_run)(steps=1)
    communicator = await connect(f"/ws/runs/{run.pk}/?after=99", users["operator"])
    await communicator.send_to(text_data="ping")  # small frames are ignored
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.send_to(text_data="x" * 5000)
    assert await closed_with(communicator) == 4400
    communicator = await connect(f"/ws/runs/{run.pk}/?after=99", users["operator"])
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await closed_with(communicator) == 4400


# -- the list -----------------------------------------------------------------------------------------
def list_path(**params: Any) -> str:
    return "/ws/runs/?" + urlencode(params, doseq=True)


async def test_it_adds_new_matching_runs_to_the_first_page(users: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(consumers, "SAFETY_POLL_SECONDS", 0.5)  # runs made here send no NOTIFY
    since = timezone.now().isoformat()
    communicator = await connect(list_path(workflow="a.one", live_new=1, since=since, ids=""), users["operator"])
    assert await communicator.receive_nothing(timeout=0.3)
    other = await database_sync_to_async(make_run)(workflow="a.two")
    mine = await database_sync_to_async(make_run)(workflow="a.one")
    html = await receive_until(communicator, f'id="run-{mine.pk}"')
    assert 'data-upsert="afterbegin:#run-rows"' in html
    assert f'id="run-{other.pk}"' not in html
    await communicator.disconnect()


async def test_it_updates_the_rows_on_the_page(users: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(consumers, "COUNTS_MIN_INTERVAL", 0.0)
    run = await database_sync_to_async(control.start)("demo.analysis", {"chunks": 1})
    communicator = await connect(list_path(ids=str(run.pk), since=timezone.now().isoformat()), users["operator"])
    first = await receive_until(communicator, f'id="run-{run.pk}"')  # the row as of now, on connect
    assert 'data-status="queued"' in first
    await database_sync_to_async(control.pause)(run.pk)
    html = await receive_until(communicator, 'data-status="paused"')
    assert f'id="run-{run.pk}"' in html
    if 'id="run-counts"' not in html:  # the counts bar follows, in the same message or the next
        html += await receive_until(communicator, 'id="run-counts"')
    assert "paused" in html
    await communicator.disconnect()


# -- wake-ups -----------------------------------------------------------------------------------------
def postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.2):
            return True
    except OSError:
        return False


async def test_it_is_woken_by_postgresql_notify_without_polling(users: Any, monkeypatch: Any) -> None:
    if not postgres():
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    monkeypatch.setattr(consumers, "POLL_SECONDS", 30.0)
    monkeypatch.setattr(consumers, "SAFETY_POLL_SECONDS", 30.0)
    run = await database_sync_to_async(control.start)("demo.analysis", {"chunks": 1})
    communicator = await connect(f"/ws/runs/{run.pk}/?after={run.event_seq}", users["operator"])
    assert await communicator.receive_nothing(timeout=0.5)  # the listener is up by now
    started = time.monotonic()
    await database_sync_to_async(control.pause)(run.pk)
    await receive_until(communicator, "run.pause_requested", timeout=3)
    assert time.monotonic() - started < 1.0
    await communicator.disconnect()


async def test_it_is_woken_by_a_redis_poke_without_polling(users: Any, monkeypatch: Any, settings: Any) -> None:
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}],
                   "prefix": f"ui-test-{time.monotonic_ns()}"},
    }}
    monkeypatch.setattr(consumers, "POLL_SECONDS", 30.0)
    monkeypatch.setattr(consumers, "SAFETY_POLL_SECONDS", 30.0)
    monkeypatch.setattr(consumers.listen.Hub, "subscribe", lambda self, run_id, event: None)  # no NOTIFY
    run = await database_sync_to_async(make_run)(steps=1)
    communicator = await connect(f"/ws/runs/{run.pk}/?after={run.event_seq}", users["operator"])
    assert await communicator.receive_nothing(timeout=0.5)
    seq = await database_sync_to_async(append_silently)(run.pk)
    assert await communicator.receive_nothing(timeout=0.5)  # no poke, no poll: nothing yet
    live.poke(run.pk, seq)
    await receive_until(communicator, f'id="ev-{seq}"', timeout=3)
    await communicator.disconnect()


def append_silently(run_id: int) -> int:
    """An event without the NOTIFY or poke a checkpoint sends."""
    from django.db import transaction

    from durable.models import Event

    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        seq = run.event_seq + 1
        Event.objects.create(run=run, seq=seq, type="event.received", data={"name": "quiet"})
        Run.objects.filter(pk=run_id).update(event_seq=seq)
    return seq



async def test_it_closes_a_socket_whose_user_lost_permission(users: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    run = await database_sync_to_async(make_run)(steps=1)
    communicator = await connect(f"/ws/runs/{run.pk}/?after=99", users["operator"])
    assert await communicator.receive_nothing(timeout=0.3)
    await database_sync_to_async(users["operator"].groups.clear)()
    assert await closed_with(communicator) == 4403


async def test_it_refuses_a_socket_from_a_foreign_origin(users: Any) -> None:
    from config.asgi import application

    run = await database_sync_to_async(make_run)(steps=1)
    communicator = WebsocketCommunicator(
        application, f"/ws/runs/{run.pk}/", headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")]
    )
    connected, _ = await communicator.connect()
    assert not connected  # the Origin check is the websocket's CSRF defence
    await communicator.disconnect()
