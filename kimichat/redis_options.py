"""How the app's Redis clients are configured (channel layer, cache, stream state): one place, one pool limit.

redis-py 8 caps an asyncio connection pool at 100 connections by default and then *raises* ``MaxConnectionsError``
instead of waiting. One worker holds a connection per Redis command in flight, and every socket that connects adds
two ``group_add`` calls, every answer that starts a pipeline: 100 sockets connecting at once made the 101st a
500 (``bench/scale.py``, issue 23). ``REDIS_MAX_CONNECTIONS`` (default 10,000, Redis's own default ``maxclients``)
bounds each pool of a worker instead; connections are opened only as they are needed and reused afterwards.
"""

from __future__ import annotations


def channel_layer_host(url: str, max_connections: int) -> dict:
    # redis-py 8 times socket reads out after 5 s by default, exactly channels-redis's blocking-pop wait: an idle
    # receive would fail. Reads get a longer timeout than the pop; connects stay short.
    return {"address": url, "socket_timeout": 15, "socket_connect_timeout": 5, "max_connections": max_connections}


def cache_options(max_connections: int) -> dict:
    return {"max_connections": max_connections}  # Django's RedisCache hands its OPTIONS to the pool
