"""Trap T11: with redis-py 8 a RedisChannelLayer receiver died after 5 s idle. Our layer config
(socket_timeout None, pinned redis 7.4.1) must keep a receiver alive through a longer quiet spell."""

from __future__ import annotations

import asyncio
import socket

import pytest
from channels_redis.core import RedisChannelLayer

REDIS = ("127.0.0.1", 6379)


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.asyncio
@pytest.mark.skipif(not redis_answers(), reason="Redis is not running on 127.0.0.1:6379")
async def test_it_keeps_a_receiver_alive_through_more_than_six_idle_seconds() -> None:
    from django.conf import settings

    config = {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}]}
    if "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower():
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer = RedisChannelLayer(**config)
    channel = await layer.new_channel()
    receiving = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(6.5)  # the quiet spell is the behaviour under test, not a wait for a condition
    assert not receiving.done(), receiving.exception() if receiving.done() else None
    await layer.send(channel, {"type": "run.poke", "run_id": 1, "seq": 1})
    message = await asyncio.wait_for(receiving, 5)
    assert message["type"] == "run.poke"
    await layer.flush()
    await layer.close_pools()
