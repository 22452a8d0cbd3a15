"""Every Redis pool of a worker takes as many commands in flight as its sockets make (kimichat/redis_options.py).

redis-py 8 caps an asyncio pool at 100 connections and then raises instead of waiting: 100 sockets connecting to one
worker at once (two ``group_add`` each) made the next connect a 500. Real Redis; skipped where none runs."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
from channels_redis.core import RedisChannelLayer

from conversations.services.chat.stream_state import RedisStreamState
from kimichat import redis_options

URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/13"
AT_ONCE = 300  # three times redis-py's default limit


@pytest.fixture(autouse=True)
def _needs_redis():
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {URL}")


async def test_the_channel_layer_takes_hundreds_of_sockets_joining_at_once(settings):
    layer = RedisChannelLayer(hosts=[redis_options.channel_layer_host(URL, settings.REDIS_MAX_CONNECTIONS)])
    channels = [await layer.new_channel() for _ in range(AT_ONCE)]
    try:
        await asyncio.gather(*(layer.group_add(f"pools.{i}", channel) for i, channel in enumerate(channels)))
        await asyncio.gather(*(layer.group_discard(f"pools.{i}", channel) for i, channel in enumerate(channels)))
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_the_stream_state_takes_hundreds_of_answers_starting_at_once(settings):
    state = RedisStreamState(URL, settings.REDIS_MAX_CONNECTIONS)
    ids = range(910_000_000, 910_000_000 + AT_ONCE)
    try:
        await asyncio.gather(*(state.start(message_id) for message_id in ids))
        assert all(await asyncio.gather(*(state.alive(message_id) for message_id in ids)))
    finally:
        await asyncio.gather(*(state.finish(message_id) for message_id in ids))
        await state.close()


def test_the_cache_pool_has_the_same_limit(settings):
    assert redis_options.cache_options(settings.REDIS_MAX_CONNECTIONS) == {"max_connections": 10_000}
