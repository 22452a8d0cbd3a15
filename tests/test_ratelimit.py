"""Rate limits: tiers by balance, fixed windows in the cache, retry_after, refusals that do not count."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from conversations.services.billing import ratelimit
from conversations.services.billing.ratelimit import RateLimited, acheck_rate_limit, check_rate_limit

D = Decimal
DAY_START = 1_700_006_400  # a UTC midnight, so minute, hour and day windows all start here
T0 = DAY_START + 30  # half a minute into the day


class Clock:
    def __init__(self, monkeypatch, now: float):
        self.now = now
        monkeypatch.setattr(ratelimit.time, "time", lambda: self.now)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch, T0)


class User:
    """check_rate_limit needs only the primary key; no database."""

    def __init__(self, pk: int):
        self.pk = pk


@pytest.mark.parametrize(
    ("balance", "per_minute", "per_hour", "per_day"),
    [
        (D(0), 20, 600, 5_000),
        (D(1), 20, 600, 5_000),
        (D(100), 20, 600, 5_000),
        (D("100.000001"), 60, 2_000, 20_000),
        (D(101), 60, 2_000, 20_000),
        (D(1_000), 60, 2_000, 20_000),
        (D(1_001), 200, 6_000, 50_000),
        (D(10_000), 200, 6_000, 50_000),
        (D(10_001), 500, 15_000, 100_000),
    ],
)
def test_tiers_follow_the_balance(balance, per_minute, per_hour, per_day):
    tier = ratelimit.tier_for(balance)
    assert (tier.per_minute, tier.per_hour, tier.per_day) == (per_minute, per_hour, per_day)


@pytest.mark.parametrize(("balance", "allowed"), [(D(50), 20), (D(500), 60), (D(5_000), 200), (D(50_000), 500)])
def test_each_tier_allows_its_requests_per_minute_then_refuses(clock, balance, allowed):
    user = User(1)
    for _ in range(allowed):
        check_rate_limit(user, balance)
    with pytest.raises(RateLimited) as info:
        check_rate_limit(user, balance)
    assert (info.value.window, info.value.limit, info.value.retry_after) == ("minute", allowed, 30)


def test_retry_after_counts_down_and_the_next_window_starts_fresh(clock):
    user = User(1)
    for _ in range(20):
        check_rate_limit(user, D(1))
    clock.now = DAY_START + 59.2
    with pytest.raises(RateLimited) as info:
        check_rate_limit(user, D(1))
    assert info.value.retry_after == 1  # 0.8 s, rounded up: never "retry after 0"
    clock.now = DAY_START + 60
    check_rate_limit(user, D(1))


def test_a_refused_request_is_not_counted(clock):
    user = User(1)
    for _ in range(20):
        check_rate_limit(user, D(1))
    for _ in range(5):
        with pytest.raises(RateLimited):
            check_rate_limit(user, D(1))
    used = {s.window: s.used for s in ratelimit.rate_limit_status(user, D(1))}
    assert used == {"minute": 20, "hour": 20, "day": 20}


def test_the_hour_limit_holds_across_minutes_and_the_longest_wait_wins(clock, settings):
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 5, "per_hour": 7, "per_day": 8}]
    user = User(1)
    for _ in range(5):
        check_rate_limit(user, D(1))
    clock.now += 60
    for _ in range(2):
        check_rate_limit(user, D(1))
    with pytest.raises(RateLimited) as info:
        check_rate_limit(user, D(1))
    assert (info.value.window, info.value.retry_after) == ("hour", 3600 - 90)
    clock.now = DAY_START + 3600  # a new hour: one more fits under the day's 8
    check_rate_limit(user, D(1))
    with pytest.raises(RateLimited) as info:
        check_rate_limit(user, D(1))
    assert (info.value.window, info.value.retry_after) == ("day", 86400 - 3600)


def test_users_are_counted_separately(clock):
    for _ in range(20):
        check_rate_limit(User(1), D(1))
    check_rate_limit(User(2), D(1))
    with pytest.raises(RateLimited):
        check_rate_limit(User(1), D(1))


def test_a_bigger_balance_lifts_the_limit_at_once(clock):
    user = User(1)
    for _ in range(20):
        check_rate_limit(user, D(1))
    with pytest.raises(RateLimited):
        check_rate_limit(user, D(1))
    check_rate_limit(user, D(500))  # a grant moved the user to the 60/min tier; the same counters apply


async def test_the_async_check_shares_the_counters(clock):
    user = User(7)
    for _ in range(10):
        check_rate_limit(user, D(1))
    for _ in range(10):
        await acheck_rate_limit(user, D(1))
    with pytest.raises(RateLimited) as info:
        await acheck_rate_limit(user, D(1))
    assert info.value.retry_after == 30
    assert await cache.aget(f"ratelimit:7:60:{DAY_START}") == 20  # the refusal was given back


def test_the_counters_expire_after_their_window():
    user = User(1)
    check_rate_limit(user, D(1))
    keys = [key for _, key, *_ in ratelimit._windows(user.pk, ratelimit.tier_for(D(1)), ratelimit.time.time())]
    assert list(cache.get_many(keys).values()) == [1, 1, 1]
    if hasattr(cache, "_cache") and hasattr(cache._cache, "get_client"):  # Redis: check the TTL it was given
        client = cache._cache.get_client()
        ttls = [client.ttl(cache.make_and_validate_key(key)) for key in keys]
        assert 0 < ttls[0] <= 120 and 3600 < ttls[1] <= 3660 and 86400 < ttls[2] <= 86460


@pytest.mark.parametrize(
    "tiers",
    [
        [],
        "20/min",
        [{"above": 0, "per_minute": 20, "per_hour": 600}],
        [{"above": 0, "per_minute": 0, "per_hour": 600, "per_day": 5000}],
        [{"above": "lots", "per_minute": 1, "per_hour": 1, "per_day": 1}],
    ],
)
def test_bad_tier_settings_fail_loudly(settings, tiers):
    settings.KIMICHAT_RATE_LIMIT_TIERS = tiers
    with pytest.raises(ImproperlyConfigured):
        ratelimit.tier_for(D(1))


def test_tiers_may_be_given_in_any_order(settings):
    settings.KIMICHAT_RATE_LIMIT_TIERS = [
        {"above": 50, "per_minute": 9, "per_hour": 90, "per_day": 900},
        {"above": 0, "per_minute": 1, "per_hour": 10, "per_day": 100},
    ]
    assert ratelimit.tier_for(D(50)).per_minute == 1
    assert ratelimit.tier_for(D(51)).per_minute == 9


def test_when_several_windows_are_full_retry_after_is_the_longest(clock, settings):
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 2, "per_hour": 100, "per_day": 2}]
    user = User(1)
    check_rate_limit(user, D(1))
    check_rate_limit(user, D(1))
    with pytest.raises(RateLimited) as info:
        check_rate_limit(user, D(1))
    assert (info.value.window, info.value.limit, info.value.retry_after) == ("day", 2, 86400 - 30)


def test_a_thousand_users_keep_their_counters(clock):
    """The embedded cache holds three counters per user: none may be evicted while its window runs (LocMem's
    default of 300 entries evicted them past 100 users, resetting limits and failing sends)."""
    cache.clear()
    for pk in range(1, 1_001):
        check_rate_limit(User(pk), D(0))
    counters = cache.get_many([key for _name, key, *_rest in ratelimit._windows(1, ratelimit.tier_for(D(0)), T0)])
    assert list(counters.values()) == [1, 1, 1]
