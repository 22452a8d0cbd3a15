"""The provider account's balance (Moonshot's GET /users/me/balance), read every few minutes and on demand, kept as
ProviderSnapshot rows so the dashboard shows it with the time it was read, and its history stays in the admin.

Every worker runs ``refresh_every_few_minutes`` (started with the generation registry's background tasks), but a
cache lock taken with the atomic ``add`` lets only one of them read per interval: the provider sees one request
every ``KIMICHAT_PROVIDER_BALANCE_INTERVAL`` seconds however many workers there are (with Redis; in-process cache:
one per worker, which is one worker).
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.core.cache import cache

from conversations.kimi.configured import get_client

logger = logging.getLogger("conversations.billing")

LOCK_KEY = "kimichat:provider-balance:lock"


async def refresh_provider_balance():
    """Read the balance now and record a snapshot (the balance endpoint, else the last headers); returns it, or
    None when the provider told nothing."""
    return await get_client().fetch_balance()


async def refresh_if_due():
    """Read the balance unless another worker (or this one) did within the interval. Returns the new snapshot, or
    None when it was not this worker's turn."""
    interval = settings.KIMICHAT_PROVIDER_BALANCE_INTERVAL
    if interval <= 0 or not await cache.aadd(LOCK_KEY, 1, interval):
        return None
    return await refresh_provider_balance()


async def refresh_every_few_minutes() -> None:
    """The background task: try every tenth of the interval (at least every 5 seconds apart), so a worker that
    starts, or takes over from a dead one, reads within about an interval. A failed read is logged and retried."""
    interval = settings.KIMICHAT_PROVIDER_BALANCE_INTERVAL
    if interval <= 0:
        return
    while True:
        try:
            await refresh_if_due()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round tries again; the chat never depends on this
            logger.warning("could not read the provider balance", exc_info=True)
        await asyncio.sleep(max(5.0, interval / 10))
