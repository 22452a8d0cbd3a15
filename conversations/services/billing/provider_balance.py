"""The provider account's balance (Moonshot's GET /users/me/balance), read every few minutes and on demand, kept as
ProviderSnapshot rows so the dashboard shows it with the time it was read, and its history stays in the admin.

Every worker runs ``refresh_every_few_minutes`` (started with the generation registry's background tasks), but a
cache lock taken with the atomic ``add`` lets only one of them read per interval: the provider sees one request
every ``KIMICHAT_PROVIDER_BALANCE_INTERVAL`` seconds however many workers there are (with Redis; in-process cache:
one per worker, which is one worker).

When a read falls below ``KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW`` (``PROVIDER_BALANCE_ALERT_BELOW``), a WARNING is
logged once, on the read that crossed it (the previous balance read was not below), and the dashboard shows an
alert for as long as the last balance read is below it; a read back above it logs an INFO line.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache

from conversations.kimi.configured import get_client

logger = logging.getLogger("conversations.billing")

LOCK_KEY = "kimichat:provider-balance:lock"


async def refresh_provider_balance():
    """Read the balance now and record a snapshot (the balance endpoint, else the last headers); returns it, or
    None when the provider told nothing."""
    snapshot = await get_client().fetch_balance()
    await database_sync_to_async(note_crossing)(snapshot)
    return snapshot


def below_alert_level(balance) -> bool:
    """Whether a balance read is under the alert level (never, when no level is set)."""
    level = settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW
    return level is not None and balance is not None and balance < level


def note_crossing(snapshot) -> None:
    """Log when ``snapshot`` (just recorded) crossed the alert level: WARNING going below, INFO back above."""
    if snapshot is None or snapshot.balance is None or settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW is None:
        return
    from conversations.models import ProviderSnapshot

    previous = ProviderSnapshot.objects.filter(balance__isnull=False, pk__lt=snapshot.pk).order_by("-pk").first()
    was_below = previous is not None and below_alert_level(previous.balance)
    level = settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW
    if below_alert_level(snapshot.balance) and not was_below:
        logger.warning("the provider balance %s is below the alert level %s: top up the provider account",
                       snapshot.balance, level)  # fmt: skip
    elif was_below and not below_alert_level(snapshot.balance):
        logger.info("the provider balance %s is back above the alert level %s", snapshot.balance, level)


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
