"""Personal API keys: made with a secret shown once, checked by its SHA-256, revoked.

The secret is ``kc-`` and 43 URL-safe characters (256 random bits). Only its hash is stored, so a leaked database
holds no usable key; the first characters (``prefix``) are kept to tell keys apart on the keys page. A wrong key
counts as a failed log-in for the caller's address in the one log-in throttle (services/accounts/login_throttle.py),
so guessing keys is stopped exactly like guessing passwords, and a throttled address is refused before any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.utils import timezone, translation
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_variables

from conversations.models import ApiKey
from conversations.services import bulk_sql
from conversations.services.accounts import login_throttle

SECRET_PREFIX = "kc-"
PREFIX_LENGTH = len(SECRET_PREFIX) + 8
MAX_SECRET_LENGTH = 200  # longer input is not a key of ours; it is refused without hashing megabytes
MAX_NAME_LENGTH = 100


class KeyRefused(Exception):
    """The key cannot be used. ``code`` says why: invalid_api_key, key_revoked, key_expired, throttled."""

    def __init__(self, code: str, message: str, *, retry_after: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once, never stored


@sensitive_variables("secret")  # never in an error report
def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@sensitive_variables("secret")  # never in an error report
def create(user, *, name: str = "", expires_at=None, spending_cap: Decimal | None = None) -> NewKey:
    name = (name or "").strip()
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(gettext("A key's name has at most %(n)d characters.") % {"n": MAX_NAME_LENGTH})
    if spending_cap is not None and spending_cap < 0:
        raise ValueError(gettext("A key's spending cap cannot be negative."))
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        owner=user,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
        spending_cap=spending_cap,
    )
    return NewKey(key=key, secret=secret)


@sensitive_variables("secret")  # never in an error report
def authenticate(secret: str, ip: str) -> ApiKey:
    """The active key ``secret`` belongs to (its owner loaded), or KeyRefused. A secret that matches no key is a
    failed authentication of ``ip`` in the log-in throttle; a throttled address is refused before any lookup."""
    return _checked(secret, ip, _lookup)


@sensitive_variables("requests")
def authenticate_many(requests: list[tuple[str, str, str | None]]) -> list[ApiKey | KeyRefused]:
    """``authenticate`` for many requests (``(secret, ip, language)``: the user API's that arrive together), with one
    query for all their keys: each one's key or its KeyRefused (in its language), in order. The throttle is checked
    and fed request by request, in that order, as one by one."""
    digests = {_digest(secret) for secret, _ip, _language in requests} - {""}
    found = {key.secret_hash: key for key in ApiKey.objects.select_related("owner").filter(secret_hash__in=digests)}
    outcomes = []
    for secret, ip, language in requests:
        try:
            with translation.override(language):
                outcomes.append(_checked(secret, ip, found.get))
        except KeyRefused as exc:
            outcomes.append(exc)
    return outcomes


def _digest(secret) -> str:
    return hash_secret(secret) if isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_LENGTH else ""


def _lookup(digest: str) -> ApiKey | None:
    return ApiKey.objects.select_related("owner").filter(secret_hash=digest).first()


@sensitive_variables("secret")
def _checked(secret: str, ip: str, lookup) -> ApiKey:
    throttled = login_throttle.check("", ip)
    if throttled is not None:
        raise KeyRefused(
            "throttled",
            gettext("Too many failed authentications from this address. Try again later."),
            retry_after=throttled.retry_after,
        )
    digest = _digest(secret)
    key = lookup(digest) if digest else None
    # The lookup is by an index on the hash, so timing tells nothing about the secret; compared again in constant
    # time all the same, so a collation or a truncating column could never make a near miss match.
    if key is None or not hmac.compare_digest(key.secret_hash, digest) or not key.owner.is_active:
        login_throttle.record_failure("", ip)
        raise KeyRefused("invalid_api_key", gettext("Invalid API key provided."))
    if key.revoked_at is not None:
        raise KeyRefused("key_revoked", gettext("This API key was revoked."))
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise KeyRefused("key_expired", gettext("This API key has expired."))
    return key


def revoke(key: ApiKey) -> None:
    """Revoke a key (again is a no-op). Requests already running finish; no new one is accepted."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=key.revoked_at)


def revoke_for_user(user, key_id: int) -> bool:
    """Revoke one of ``user``'s own keys; False when no such key of theirs exists."""
    key = ApiKey.objects.filter(owner=user, pk=key_id).first()
    if key is None:
        return False
    revoke(key)
    return True


def keys_of(user):
    return ApiKey.objects.filter(owner=user).order_by("-created_at", "-pk")


def note_use(key_id: int, credits: Decimal) -> None:
    """Count one request made with the key and what it cost."""
    note_uses({key_id: (1, credits)})


def note_uses(uses: dict[int, tuple[int, Decimal]]) -> None:
    """Count, for each key id, its requests and what they cost (``{key_id: (requests, credits)}``), in one
    statement (services/bulk_sql.py; atomic on its own); increments, so concurrent counts add up."""
    bulk_sql.update_rows(
        ApiKey,
        {key_id: {"requests": count, "credits_spent": spent} for key_id, (count, spent) in uses.items()},
        added=("requests", "credits_spent"),
        common={"last_used_at": timezone.now()},
    )


def lock(key_ids) -> None:
    """Lock the keys' rows until the surrounding transaction ends, in the order of their ids. Whatever locks a key
    and a credit account locks the key first (``metering.admit`` checks a cap under the key's lock, then reserves):
    two such transactions never wait for each other crosswise. (SQLite takes the whole file for a writer: nothing
    to lock row by row.)"""
    if not connection.features.has_select_for_update:
        return
    list(ApiKey.objects.select_for_update().filter(pk__in=list(key_ids)).order_by("pk").values_list("pk", flat=True))
