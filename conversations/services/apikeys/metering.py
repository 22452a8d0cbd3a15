"""Paying for an answer of the /v1/ API: the chat's ledger (reserve → settle/release), its prices and its per-user
rate limits, plus the key's own spending cap.

``admit`` counts the request in the user's rate limit (the same counters as the chat: a user's browser and scripts
share them), then, in one transaction under the key's row lock, checks the key's cap against what it spent plus
what its running answers hold, and reserves the answer's worst case. ``finish`` settles what was generated (or
releases everything when nothing was) exactly once, and counts the request on the key; ``finish_many`` does the same
for the requests that end together, in one transaction (api_v1/common.Run.finish). A key is always locked before
its owner's account (``keys.lock``), on every path that takes both. All synchronous and short:
the views call them through ``database_sync_to_async``, never holding a connection while the upstream streams.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils.translation import gettext

from conversations.kimi.events import Usage
from conversations.models import ApiKey, CreditTransaction
from conversations.services.apikeys import keys
from conversations.services.billing import credits, pricing
from conversations.services.billing.ratelimit import check_rate_limit, rate_limit_status


class KeyOverCap(Exception):
    def __init__(self, cap: Decimal, committed: Decimal, cost: Decimal):
        self.cap, self.committed, self.cost = cap, committed, cost
        super().__init__(
            gettext(
                "This answer may cost up to %(cost)s credits; this API key has %(left)s left of its spending cap "
                "of %(cap)s."
            )
            % {"cost": _plain(cost), "left": _plain(max(cap - committed, Decimal(0))), "cap": _plain(cap)}
        )


def _plain(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


@dataclass(frozen=True)
class Limits:
    """What the X-RateLimit-* and X-Credits-Remaining headers say: the minute window and the balance."""

    limit: int
    remaining: int
    reset: int  # epoch seconds
    balance: Decimal

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
            "X-Credits-Remaining": _plain(self.balance),
        }


def limits(user, balance: Decimal | None = None) -> Limits:
    """The headers' figures; ``balance``: the user's balance as the caller just wrote it (else read)."""
    balance = credits.get_balance(user) if balance is None else balance
    minute = rate_limit_status(user, balance)[0]
    return Limits(
        limit=minute.limit,
        remaining=max(minute.limit - minute.used, 0),
        reset=int(time.time()) + minute.resets_in,
        balance=balance,
    )


def count_request(user) -> None:
    """Count a request that reserves nothing (GET /v1/models) in the user's rate limit; RateLimited if over."""
    check_rate_limit(user, credits.get_balance(user))


def _committed(key: ApiKey) -> Decimal:
    """What the key spent plus what its running answers hold (their open reservations)."""
    held = CreditTransaction.objects.filter(
        api_key=key, kind=CreditTransaction.Kind.CHARGE, state=CreditTransaction.State.OPEN
    ).aggregate(total=Sum("amount"))["total"]
    return key.credits_spent - (held or Decimal(0))


def admit(
    key_id: int, user, *, model: str, prompt_tokens: int, max_completion_tokens: int, counted: bool = False
) -> credits.Reservation:
    """Count the request and reserve its worst case. Raises RateLimited, KeyOverCap or InsufficientCredits; nothing
    is reserved then (a refusal by the cap or the balance still counts as a request, as the chat's does).
    ``counted``: its rate limit was counted already (by ``bulk_admit``, which leaves the reservation to this)."""
    if not counted:
        check_rate_limit(user, credits.get_balance(user))
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key_id)
        if key.spending_cap is not None:
            cost = credits.estimate_cost(model, prompt_tokens, max_completion_tokens)
            committed = _committed(key)
            if committed + cost > key.spending_cap:
                raise KeyOverCap(key.spending_cap, committed, cost)
        return credits.reserve(
            user,
            model=model,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=max_completion_tokens,
            api_key_id=key_id,
        )


def finish(reservation: credits.Reservation, *, usage: Usage | None, estimated: bool, generated: bool, note: str = ""):
    """Settle what was generated, or release the whole reservation when nothing was; count the request on the key.
    Exactly once: a second call finds the reservation closed and changes nothing. Returns the cost (None when it
    was already closed)."""
    try:
        with transaction.atomic():
            keys.lock([reservation.api_key_id])  # the key before the account, as ``admit`` takes them
            if generated:
                cost = credits.settle(reservation, message=None, usage=usage, estimated=estimated).cost
            else:
                credits.release(reservation, note=note)
                cost = Decimal(0)
            keys.note_use(reservation.api_key_id, cost)
            return cost
    except credits.ReservationClosed:
        return None


@dataclass(frozen=True)
class Ending:
    """What ``finish`` takes, for one request."""

    reservation: credits.Reservation
    usage: Usage | None
    estimated: bool
    generated: bool
    note: str = ""


def finish_many(endings: list[Ending]) -> list[Decimal | None]:
    """``finish`` for many requests, each outcome as ``finish`` returns it, in one transaction of a fixed number of
    statements whatever their number: the prices (1), the keys locked (1; not on SQLite), the ledger's
    ``close_many`` (5) and the keys' counters (1), against ~10 a request one by one. Requests that end together
    (scripts started together) cost ~0.3 ms of CPU each in a batch of 30 against ~1.4 alone (docs/performance.md,
    issue 23, session 11). ``tests/test_bulk_finish.py`` compares the rows with one by one's."""
    if not endings:
        return []
    prices = pricing.prices_for({ending.reservation.model for ending in endings if ending.generated})
    closings = [
        credits.settling(ending.reservation, ending.usage, ending.estimated, price=prices[ending.reservation.model])
        if ending.generated
        else credits.releasing(ending.reservation, ending.note)
        for ending in endings
    ]
    reservations = [ending.reservation for ending in endings]
    with transaction.atomic():
        keys.lock({reservation.api_key_id for reservation in reservations if reservation.api_key_id is not None})
        costs = credits.close_many(reservations, closings)
        uses: dict[int, tuple[int, Decimal]] = {}
        for reservation, cost in zip(reservations, costs, strict=True):
            if cost is not None and reservation.api_key_id is not None:
                count, spent = uses.get(reservation.api_key_id, (0, Decimal(0)))
                uses[reservation.api_key_id] = (count + 1, spent + cost)
        keys.note_uses(uses)
    return costs
