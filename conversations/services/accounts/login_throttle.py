"""Throttle password guessing: failed log-ins are counted per account and per client address in the cache.

Fixed windows of ``LOGIN_THROTTLE_SECONDS`` starting at the first failure: once an account has
``LOGIN_FAILURES_PER_ACCOUNT`` failures, or an address ``LOGIN_FAILURES_PER_IP``, every attempt for it is refused
until its window ends — the right password too, or guessing would go on unhindered. Counters live in the cache, so
with REDIS_URL every worker shares them; a success clears its account's counter, never the address's.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

PREFIX = "login-fail"


@dataclass(frozen=True)
class Throttled:
    retry_after: int  # seconds until the window that blocks this attempt ends
    scope: str  # "account" or "ip"


def _keys(scope: str, value: str) -> tuple[str, str]:
    # Hashed: usernames and addresses may hold anything, and cache keys must be short and plain.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}:{scope}:{digest}", f"{PREFIX}:{scope}:{digest}:until"


def _scopes(username: str, ip: str) -> list[tuple[str, str, int]]:
    scopes = [("ip", ip or "unknown", settings.LOGIN_FAILURES_PER_IP)]
    if username:
        # Case-folded: "Alice" and "alice" share one counter, so case variants do not multiply the guesses.
        scopes.insert(0, ("account", username.strip().casefold(), settings.LOGIN_FAILURES_PER_ACCOUNT))
    return scopes


def check(username: str, ip: str) -> Throttled | None:
    """The reason this attempt must be refused before the password is even checked, or None."""
    for scope, value, limit in _scopes(username, ip):
        count_key, until_key = _keys(scope, value)
        values = cache.get_many([count_key, until_key])
        if values.get(count_key, 0) >= limit:
            until = values.get(until_key) or time.time() + settings.LOGIN_THROTTLE_SECONDS
            return Throttled(retry_after=max(1, math.ceil(until - time.time())), scope=scope)
    return None


def record_failure(username: str, ip: str) -> None:
    window = settings.LOGIN_THROTTLE_SECONDS
    for scope, value, _limit in _scopes(username, ip):
        count_key, until_key = _keys(scope, value)
        # add() starts a window only if none is open; incr() keeps the key's expiry (Redis INCR, LocMem alike).
        if cache.add(count_key, 0, timeout=window):
            cache.set(until_key, time.time() + window, timeout=window)
        try:
            cache.incr(count_key)
        except ValueError:  # expired between add() and incr(): this failure opens a new window
            cache.set(count_key, 1, timeout=window)
            cache.set(until_key, time.time() + window, timeout=window)


def record_success(username: str) -> None:
    if username:
        cache.delete_many(_keys("account", username.strip().casefold()))
