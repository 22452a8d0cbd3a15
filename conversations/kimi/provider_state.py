"""What the provider told us about the account (rate limits, credits, balance), kept as ProviderSnapshot rows.

Header snapshots are throttled to one a minute per process group (a cache key), because every streamed answer
carries the headers and admins only need the trend. A failed write is logged and never breaks a chat, and no answer
waits for it: the write (and the cache key, whose async methods run on the database thread too) is a task of its
own, at most one a minute per process, so an answer's first piece never queues behind a burst's sends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from decimal import Decimal

from django.core.cache import cache

from conversations.kimi.events import ResponseMeta

logger = logging.getLogger("conversations.kimi")

HEADER_SNAPSHOT_INTERVAL = 60  # seconds
_THROTTLE_KEY = "kimi:provider-snapshot:headers"

_last_meta: ResponseMeta | None = None  # the last response that carried rate-limit or credits headers


def last_meta() -> ResponseMeta | None:
    return _last_meta


def remember(meta: ResponseMeta) -> None:
    global _last_meta
    if meta.rate_limit or meta.credits_remaining:
        _last_meta = meta


class _HeaderRecorder:
    """This process's side of the throttle: one snapshot task a minute at most, never awaited by a stream."""

    def __init__(self) -> None:
        self.next_at = 0.0  # time.monotonic() before which a response's headers are not recorded
        self.tasks: set[asyncio.Task] = set()

    def offer(self, meta: ResponseMeta) -> None:
        if not (meta.rate_limit or meta.credits_remaining):
            return
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + HEADER_SNAPSHOT_INTERVAL
        # A context of its own: the task may outlive the request that started it (whose thread-sensitive calls
        # asgiref refuses once it has ended: kimichat/request_threads.py).
        task = asyncio.get_running_loop().create_task(
            record_headers(meta), name="kimichat-provider-headers", context=contextvars.Context()
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait for the snapshots being written (tests; a worker's shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def reset(self) -> None:
        self.next_at = 0.0


headers = _HeaderRecorder()


async def record_headers(meta: ResponseMeta) -> None:
    if not (meta.rate_limit or meta.credits_remaining):
        return
    try:
        if await cache.aadd(_THROTTLE_KEY, 1, HEADER_SNAPSHOT_INTERVAL):
            await _create(source="headers", meta=meta)
    except Exception:
        logger.warning("could not record the provider's rate-limit headers", exc_info=True)


async def record_balance(balance: Decimal | None, meta: ResponseMeta | None, source: str):
    return await _create(source=source, meta=meta, balance=balance)


async def latest():
    from conversations.models import ProviderSnapshot

    return await ProviderSnapshot.objects.order_by("-recorded_at", "-id").afirst()


async def _create(*, source: str, meta: ResponseMeta | None, balance: Decimal | None = None):
    from conversations.models import ProviderSnapshot  # the kimi package is importable before apps are ready

    return await ProviderSnapshot.objects.acreate(
        balance=balance,
        credits_remaining=(meta.credits_remaining if meta else "")[:64],
        rate_limit=dict(meta.rate_limit) if meta else {},
        source=source,
    )
