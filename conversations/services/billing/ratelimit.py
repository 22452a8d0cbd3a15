"""Requests per minute, hour and day, with limits that rise with the balance (seed 003's tiers).

Fixed windows counted in Django's cache: one counter per user, window length and window start, so an old window's
key is simply never read again and expires. With REDIS_URL the cache is Redis and every worker shares the counters.
Each counter moves only through the cache's atomic ``add`` (create at 0) and ``incr``; a request that would go over
any limit is counted back out, so refused attempts do not use up the user's allowance.
"""

from __future__ import annotations

import math
import time
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

WINDOWS = (("minute", 60), ("hour", 3_600), ("day", 86_400))
KEY_SLACK_SECONDS = 60  # a counter outlives its window a little, so a slow clock on one worker still finds it


class RateLimited(Exception):
    """Over a limit. ``retry_after`` is whole seconds until the (longest) exceeded window resets."""

    def __init__(self, retry_after: int, *, window: str = "", limit: int = 0):
        self.retry_after = retry_after
        self.window = window
        self.limit = limit
        super().__init__(f"rate limited: {limit} requests per {window}; retry after {retry_after}s")


@dataclass(frozen=True, slots=True)
class Tier:
    above: Decimal  # applies when the balance is above this
    per_minute: int
    per_hour: int
    per_day: int

    def limit(self, window: str) -> int:
        return getattr(self, f"per_{window}")


@dataclass(frozen=True, slots=True)
class WindowStatus:
    window: str
    limit: int
    used: int
    resets_in: int  # seconds


def tiers() -> list[Tier]:
    """settings.KIMICHAT_RATE_LIMIT_TIERS, validated, lowest threshold first."""
    raw = settings.KIMICHAT_RATE_LIMIT_TIERS
    if not isinstance(raw, list) or not raw:
        raise ImproperlyConfigured("KIMICHAT_RATE_LIMIT_TIERS must be a non-empty list of tiers")
    result = []
    for item in raw:
        try:
            tier = Tier(
                above=Decimal(str(item["above"])),
                per_minute=int(item["per_minute"]),
                per_hour=int(item["per_hour"]),
                per_day=int(item["per_day"]),
            )
        except (KeyError, TypeError, ValueError, ArithmeticError):
            raise ImproperlyConfigured(
                f"a rate-limit tier needs numeric above, per_minute, per_hour and per_day: {item!r}"
            ) from None
        if min(tier.per_minute, tier.per_hour, tier.per_day) < 1:
            raise ImproperlyConfigured(f"rate limits must be at least 1 request: {item!r}")
        result.append(tier)
    return sorted(result, key=lambda t: t.above)


def tier_for(balance: Decimal) -> Tier:
    """The highest tier whose threshold the balance is above; the lowest tier for a balance of zero or less."""
    ordered = tiers()
    chosen = ordered[0]
    for tier in ordered:
        if balance > tier.above:
            chosen = tier
    return chosen


def _windows(user_id: int, tier: Tier, now: float) -> list[tuple[str, str, int, int, float]]:
    """(window, cache key, limit, key lifetime, seconds to reset) for each window at ``now``."""
    result = []
    for name, length in WINDOWS:
        start = int(now // length) * length
        key = f"ratelimit:{user_id}:{length}:{start}"
        result.append((name, key, tier.limit(name), length + KEY_SLACK_SECONDS, start + length - now))
    return result


def _refusal(exceeded: list[tuple[str, int, float]]) -> RateLimited:
    # The longest wait wins: after a shorter window resets the longer one would still refuse.
    window, limit, resets_in = max(exceeded, key=lambda e: e[2])
    return RateLimited(max(1, math.ceil(resets_in)), window=window, limit=limit)


def _incr(key: str, ttl: int) -> int:
    cache.add(key, 0, ttl)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr (only at a window's very end): start it again
        cache.add(key, 0, ttl)
        return cache.incr(key)


async def _aincr(key: str, ttl: int) -> int:
    await cache.aadd(key, 0, ttl)
    try:
        return await cache.aincr(key)
    except ValueError:
        await cache.aadd(key, 0, ttl)
        return await cache.aincr(key)


def check_rate_limit(user, balance: Decimal) -> None:
    """Count one request for the user; raise RateLimited (counting nothing) if it is over a limit."""
    windows = _windows(user.pk, tier_for(balance), time.time())
    counted, exceeded = [], []
    for name, key, limit, ttl, resets_in in windows:
        counted.append(key)
        if _incr(key, ttl) > limit:
            exceeded.append((name, limit, resets_in))
    if exceeded:
        for key in counted:
            with suppress(ValueError):  # the window ended meanwhile: nothing left to give back
                cache.decr(key)
        raise _refusal(exceeded)


async def acheck_rate_limit(user, balance: Decimal) -> None:
    """``check_rate_limit`` for async callers (the websocket consumer), through the cache's async API."""
    windows = _windows(user.pk, tier_for(balance), time.time())
    counted, exceeded = [], []
    for name, key, limit, ttl, resets_in in windows:
        counted.append(key)
        if await _aincr(key, ttl) > limit:
            exceeded.append((name, limit, resets_in))
    if exceeded:
        for key in counted:
            with suppress(ValueError):
                await cache.adecr(key)
        raise _refusal(exceeded)


def rate_limit_status(user, balance: Decimal) -> list[WindowStatus]:
    """How much of each window the user has used, for the usage page. Reads the cache only."""
    windows = _windows(user.pk, tier_for(balance), time.time())
    counts = cache.get_many([key for _, key, *_ in windows])
    return [
        WindowStatus(window=name, limit=limit, used=int(counts.get(key, 0)), resets_in=max(1, math.ceil(resets_in)))
        for name, key, limit, _ttl, resets_in in windows
    ]
