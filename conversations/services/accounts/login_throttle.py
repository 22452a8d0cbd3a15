"""Throttle password guessing, behind every way to authenticate (``backends.ThrottledModelBackend``).

Failures are counted in the cache in fixed windows of ``LOGIN_THROTTLE_SECONDS`` from the first failure, in three
scopes; once a scope reaches its limit every attempt in it is refused until its window ends — the right password
too, or guessing would go on unhindered:

- an account from one address (``LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS``, 5): a guesser is stopped quickly, and a
  stranger's guesses lock the account only for the stranger's own address;
- an address, whatever the account (``LOGIN_FAILURES_PER_IP``, 20): one address cannot spray many accounts;
- an account, whatever the address (``LOGIN_FAILURES_PER_ACCOUNT``, 100): many addresses cannot guess forever; locking
  the owner out this way takes a stranger several addresses' worth of failures.

Accounts are keyed on the username as Django logs it in (NFKC) and case-folded, so neither "ｖictim" nor "VICTIM"
gets a counter of its own. The address is the one the last trusted proxy saw (``client_address``). With REDIS_URL
every worker shares the counters. A success clears only its account-and-address counter; staff lift all of an
account's locks with ``unlock`` (the users admin).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

PREFIX = "login-fail"


@dataclass(frozen=True)
class Throttled:
    retry_after: int  # seconds until the window that blocks this attempt ends
    scope: str  # "pair" (account from this address), "ip" or "account"


@dataclass(frozen=True)
class LockStatus:
    account_until: float | None = None  # epoch seconds: locked from everywhere until then
    addresses: dict[str, float] = field(default_factory=dict)  # address -> epoch seconds it is locked from until

    @property
    def locked(self) -> bool:
        now = time.time()
        return bool(
            (self.account_until and self.account_until > now) or any(until > now for until in self.addresses.values())
        )


def account_key(username: str) -> str:
    """The account a username logs in as: Django's NFKC normalisation, then case-folded (NFKC again after folding,
    as Unicode's NFKC_Casefold)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).strip().casefold())


def _digest(value: str) -> str:
    # Hashed: usernames and addresses may hold anything, and cache keys must be short and plain.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _keys(scope: str, value: str) -> tuple[str, str]:
    digest = _digest(value)
    return f"{PREFIX}:{scope}:{digest}", f"{PREFIX}:{scope}:{digest}:until"


def _epoch_key(account: str) -> str:
    return f"{PREFIX}:epoch:{_digest(account)}"


def _locked_key(account: str) -> str:
    return f"{PREFIX}:locked:{_digest(account)}"


def _scopes(username: str, ip: str) -> list[tuple[str, str, int]]:
    scopes = []
    account = account_key(username) if username else ""
    if account and ip:
        # The pair's counters hang off the account's epoch: ``unlock`` lifts every address's lock by moving it on.
        epoch = cache.get(_epoch_key(account), "0")
        scopes.append(("pair", f"{epoch}\n{account}\n{ip}", settings.LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS))
    if ip:
        scopes.append(("ip", ip, settings.LOGIN_FAILURES_PER_IP))
    if account:
        scopes.append(("account", account, settings.LOGIN_FAILURES_PER_ACCOUNT))
    return scopes


def _blocked(scope: str, value: str, limit: int, window: int) -> Throttled | None:
    count_key, until_key = _keys(scope, value)
    values = cache.get_many([count_key, until_key])
    if values.get(count_key, 0) >= limit:
        until = values.get(until_key) or time.time() + window
        return Throttled(retry_after=max(1, math.ceil(until - time.time())), scope=scope)
    return None


def check(username: str, ip: str) -> Throttled | None:
    """The reason this attempt must be refused before the password is even checked, or None."""
    for scope, value, limit in _scopes(username, ip):
        throttled = _blocked(scope, value, limit, settings.LOGIN_THROTTLE_SECONDS)
        if throttled is not None:
            return throttled
    return None


def _count(count_key: str, until_key: str, window: int) -> tuple[int, float]:
    # add() starts a window only if none is open; incr() keeps the key's expiry (Redis INCR, LocMem alike).
    until = time.time() + window
    if cache.add(count_key, 0, timeout=window):
        cache.set(until_key, until, timeout=window)
    try:
        count = cache.incr(count_key)
    except ValueError:  # expired between add() and incr(): this failure opens a new window
        cache.set(count_key, 1, timeout=window)
        cache.set(until_key, until, timeout=window)
        count = 1
    return count, cache.get(until_key) or until


def record_failure(username: str, ip: str) -> None:
    window = settings.LOGIN_THROTTLE_SECONDS
    for scope, value, limit in _scopes(username, ip):
        count, until = _count(*_keys(scope, value), window)
        if scope == "pair" and count >= limit:
            # Kept for the users admin: which addresses an account is locked from (the pair keys are hashed).
            account = account_key(username)
            locked = cache.get(_locked_key(account)) or {}
            locked[ip] = until
            cache.set(_locked_key(account), locked, timeout=window)


def record_success(username: str, ip: str) -> None:
    if username and ip:
        cache.delete_many(_keys(*_scopes(username, ip)[0][:2]))


def lock_status(username: str) -> LockStatus:
    account = account_key(username)
    count_key, until_key = _keys("account", account)
    values = cache.get_many([count_key, until_key, _locked_key(account)])
    account_until = values.get(until_key) if values.get(count_key, 0) >= settings.LOGIN_FAILURES_PER_ACCOUNT else None
    return LockStatus(account_until=account_until, addresses=dict(values.get(_locked_key(account)) or {}))


def unlock(username: str) -> None:
    """Lift every lock on an account: account-wide and from each address (an address's own lock stays)."""
    account = account_key(username)
    cache.delete_many([*_keys("account", account), _locked_key(account)])
    cache.set(_epoch_key(account), secrets.token_hex(8), timeout=None)


# --- sign-up --------------------------------------------------------------------------------------------------


def check_signup(ip: str) -> Throttled | None:
    return _blocked("signup", ip or "unknown", settings.SIGNUP_ATTEMPTS_PER_IP, settings.SIGNUP_THROTTLE_SECONDS)


def record_signup(ip: str) -> None:
    """Every sign-up attempt counts, accepted or not: each one tells whether a username is taken."""
    _count(*_keys("signup", ip or "unknown"), settings.SIGNUP_THROTTLE_SECONDS)


# --- password reset ---------------------------------------------------------------------------------------------


def check_password_reset(ip: str) -> Throttled | None:
    return _blocked("reset", ip or "unknown", settings.PASSWORD_RESETS_PER_IP, settings.PASSWORD_RESET_THROTTLE_SECONDS)


def record_password_reset(ip: str) -> None:
    _count(*_keys("reset", ip or "unknown"), settings.PASSWORD_RESET_THROTTLE_SECONDS)


def allow_reset_mail(email: str) -> bool:
    """Count a reset request for ``email`` (whether or not an account has it); False past the limit. Then no mail
    goes out, but the page says the same: nobody can flood an inbox, nor learn whether the address exists."""
    window = settings.PASSWORD_RESET_THROTTLE_SECONDS
    count, _until = _count(*_keys("reset-mail", account_key(email)), window)
    return count <= settings.PASSWORD_RESETS_PER_EMAIL
