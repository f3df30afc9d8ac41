"""/ws/approvals/: the inbox, the detail and the navigation count follow the database live."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from approvals import decisions
from approvals.models import AuditRecord
from runs import routing
from tests.approvals.inbox_support import make_approval

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

WAIT = 6.0  # the slowest wake-up is the 2 s safety poll (PostgreSQL without a NOTIFY)


def cursor_now() -> int:
    return AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0


async def connect(user: Any, query: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(routing.websocket_urlpatterns), f"/ws/approvals/?{query}")
    communicator.scope["user"] = user or AnonymousUser()
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator: WebsocketCommunicator, predicate: Any, timeout: float = WAIT) -> str:
    """Collect messages until their concatenation satisfies `predicate`; return it."""
    seen = ""
    deadline = time.monotonic() + timeout
    while not predicate(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; received: {seen[-2000:]}")
        message = await communicator.receive_output(timeout=remaining)
        assert message["type"] == "websocket.send", message
        seen += message["text"]
    return seen


async def test_it_refuses_users_who_are_not_reviewers_after_accepting(people: Any) -> None:
    for user in (None, people["op"]):
        communicator = await connect(user, "view=inbox")
        assert await communicator.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
        await communicator.disconnect()


async def test_it_closes_on_bad_parameters_and_unknown_approvals(people: Any) -> None:
    for query, code in (("view=nope", 4400), ("view=inbox&run=x", 4400), ("view=detail&approval=999999", 4404),
                        ("view=inbox&audit=-1", 4400)):
        communicator = await connect(people["ana"], query)
        assert await communicator.receive_output(timeout=2) == {"type": "websocket.close", "code": code}, query
        await communicator.disconnect()


async def test_it_keeps_the_navigation_count_current(people: Any) -> None:
    await database_sync_to_async(make_approval)()
    communicator = await connect(people["ana"], "view=count")
    first = await receive_until(communicator, lambda html: "approvals-count" in html)
    assert 'data-count="1"' in first
    await database_sync_to_async(make_approval)()
    await database_sync_to_async(make_approval)(group="run admins")  # not ana's group
    assert 'data-count="2"' in await receive_until(communicator, lambda html: 'data-count="2"' in html)
    await communicator.disconnect()


async def test_it_adds_new_approvals_and_removes_decided_ones_for_everyone(people: Any) -> None:
    shown = await database_sync_to_async(make_approval)()
    cursor = await database_sync_to_async(cursor_now)()
    communicator = await connect(people["ana"], f"view=inbox&ids={shown.pk}&audit={cursor}")
    await receive_until(communicator, lambda html: "approvals-count" in html)

    new = await database_sync_to_async(make_approval)(tool="send_email", arguments={"to": "<b>x</b>"})
    html = await receive_until(communicator, lambda html: f'id="approval-{new.pk}"' in html)
    card = re.search(rf'<article id="approval-{new.pk}".*?</article>', html, re.DOTALL).group(0)
    assert 'data-upsert="afterbegin:#inbox-cards"' in card and "&lt;b&gt;x&lt;/b&gt;" in card
    assert f'value="{new.pk}:{new.arguments_hash}"' in card  # selectable for bulk, bound to the proposal
    assert "csrfmiddlewaretoken" not in card  # htmx sends the page's token as a header; frames carry none

    await database_sync_to_async(decisions.decide)(approval_id=shown.pk, user=people["bo"], approved=False,
                                                   reason="duplicate")
    html = await receive_until(communicator, lambda html: f'id="approval-{shown.pk}"' in html)
    gone = re.search(rf'<article id="approval-{shown.pk}".*?</article>', html, re.DOTALL).group(0)
    assert "is-gone" in gone and "Rejected by bo: duplicate" in gone and "data-upsert" not in gone
    assert 'id="inbox-cursor"' in html  # a reconnect resumes from here
    await communicator.disconnect()


async def test_it_shows_only_approvals_of_the_viewers_groups_and_filters(people: Any) -> None:
    cursor = await database_sync_to_async(cursor_now)()
    communicator = await connect(people["ana"], f"view=inbox&tool=refund&audit={cursor}")
    await receive_until(communicator, lambda html: "approvals-count" in html)
    await database_sync_to_async(make_approval)(group="run admins")
    await database_sync_to_async(make_approval)(tool="send_email")
    marker = await database_sync_to_async(make_approval)(tool="refund")
    html = await receive_until(communicator, lambda html: f'id="approval-{marker.pk}"' in html)
    assert re.findall(r'<article id="approval-(\d+)"', html) == [str(marker.pk)]
    await communicator.disconnect()


async def test_it_replays_what_changed_since_the_page_was_rendered(people: Any) -> None:
    cursor = await database_sync_to_async(cursor_now)()
    missed = await database_sync_to_async(make_approval)()  # between the page and the socket
    communicator = await connect(people["ana"], f"view=inbox&audit={cursor}")
    html = await receive_until(communicator, lambda html: f'id="approval-{missed.pk}"' in html, timeout=2)
    assert "approvals-count" in html
    await communicator.disconnect()


async def test_it_updates_the_detail_when_someone_else_decides(people: Any) -> None:
    approval = await database_sync_to_async(make_approval)()
    cursor = await database_sync_to_async(cursor_now)()
    communicator = await connect(people["ana"], f"view=detail&approval={approval.pk}&audit={cursor}")
    await receive_until(communicator, lambda html: "approvals-count" in html)
    await database_sync_to_async(decisions.comment)(approval_id=approval.pk, user=people["cy"], text="checking")
    html = await receive_until(communicator, lambda html: "checking" in html)
    assert 'id="audit-list"' in html and 'id="decision-panel"' not in html  # the forms stay as typed
    await database_sync_to_async(decisions.decide)(approval_id=approval.pk, user=people["bo"], approved=True)
    html = await receive_until(communicator, lambda html: 'id="decision-panel"' in html)
    assert "Approved by bo" in html and 'data-status="approved"' in html
    await communicator.disconnect()


async def test_it_is_woken_by_a_redis_poke(people: Any, settings: Any) -> None:
    """With Redis, a request pokes the group "approvals" after commit: faster than any poll."""
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}],
                   "prefix": f"durable-test-{time.monotonic_ns()}"},
    }}
    from runs import listen

    if listen.is_postgres():
        pytest.skip("on PostgreSQL the engine's NOTIFY is as fast; this checks the Redis path alone")
    from runs import consumers

    slow = consumers.SAFETY_POLL_SECONDS
    communicator = await connect(people["ana"], f"view=count&audit={await database_sync_to_async(cursor_now)()}")
    await receive_until(communicator, lambda html: "approvals-count" in html)
    await asyncio.sleep(0.3)  # the consumer is now waiting for a wake-up (or its 2 s safety poll)
    started = time.monotonic()
    await database_sync_to_async(make_approval)()
    await receive_until(communicator, lambda html: 'data-count="1"' in html, timeout=slow + 2)
    assert time.monotonic() - started < slow * 0.75
    await communicator.disconnect()
