"""The user API's requests that wait together, admitted together: ``metering.admit`` for a batch.

One request of ``POST /v1/chat/completions`` costs ~12 statements on the worker's database thread to admit (the
allow-list, the balance, the key's row lock, the price, the account's lock, the caps, the ledger row) and ~5 ms of
Django ORM; 400 scripts starting at once queued their admissions for seconds (docs/performance.md, issue 23).
``api_v1/common.admit`` hands every request to ``services/batching.py``, and the requests that arrived while the
previous batch ran are admitted here with a fixed number of statements: the allow-lists (1), the balances (1),
each rate limit (the cache, as before), the spending caps (2), each model's price (1 a model), then one
transaction: the accounts locked (1), one UPDATE of their balances and one INSERT of the ledger rows.

The rules stay ``metering.admit``'s: this module only **accepts**. A request the allow-list refuses, a user's
second request of the batch, a key with a spending cap (its check reads what the key spent under the key's lock),
a user with a spending cap, a balance short of the cost, an account not opened yet: each is handed back as
``Alone`` and admitted by ``metering.admit`` one by one, which refuses (or accepts) it exactly as before. So is
every request of a batch whose transaction fails. A rate-limit refusal is the one refusal made here: the counters
are the same cache either way. ``tests/test_bulk_admit.py`` compares both paths' outcomes and ledger rows.

A request alone is a batch of one: 13 statements here against ``metering.admit``'s 17 (``bench/sendpath.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from conversations.services.accounts import model_access
from conversations.services.billing import budgets, credits, pricing
from conversations.services.billing.ratelimit import RateLimited, check_rate_limit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """What ``metering.admit`` takes, for one request; ``key``: the authenticated key, as read then."""

    key: object  # ApiKey
    user: object
    model: str
    prompt_tokens: int
    max_completion_tokens: int


@dataclass(frozen=True)
class Alone:
    """The request goes through ``metering.admit`` by itself; ``counted``: its rate limit was counted here."""

    counted: bool


@dataclass(frozen=True)
class Admitted:
    reservation: credits.Reservation
    balance: Decimal  # the user's balance after it, for the response's headers


def admit_many(requests: list[Request]) -> list[Admitted | RateLimited | Alone]:
    """Each request's outcome, in order. Synchronous: on the database thread."""
    user_ids = {request.user.pk for request in requests}
    allowed = model_access.allowed_models_of(user_ids)
    balances = credits.balances_of(user_ids)
    outcomes: list = []
    first_of_user: dict[int, int] = {}
    for index, request in enumerate(requests):
        permitted = allowed[request.user.pk]
        if permitted is not None and request.model not in permitted:
            outcomes.append(Alone(counted=False))  # refused by the allow-list, before the rate limit, as alone
            continue
        try:
            check_rate_limit(request.user, balances[request.user.pk])
        except RateLimited as exc:
            outcomes.append(exc)
            continue
        outcomes.append(Alone(counted=True))
        if request.key.spending_cap is None:
            first_of_user.setdefault(request.user.pk, index)
    together = list(first_of_user.values())
    if together:
        uncapped = budgets.without_caps(requests[index].user.pk for index in together)
        together = [index for index in together if requests[index].user.pk in uncapped]
    if together:
        try:
            with transaction.atomic():
                outcomes_together = _reserve_together(requests, together)
        except Exception:  # nothing of the batch was written (one transaction): each goes alone, as before
            logger.exception("A batch of %d API admissions failed; admitting them one by one", len(together))
            outcomes_together = {}
        for index, outcome in outcomes_together.items():
            outcomes[index] = outcome
    logger.debug("admitted together: %d of %d requests", sum(isinstance(o, Admitted) for o in outcomes), len(requests))
    return outcomes


def _reserve_together(requests: list[Request], together: list[int]) -> dict[int, Admitted]:
    accounts = credits.locked_accounts(requests[index].user.pk for index in together)
    prices: dict[str, pricing.Price] = {}
    holds, indices = [], []
    for index in together:
        request = requests[index]
        account = accounts.get(request.user.pk)
        if account is None:  # no account yet: ``reserve`` opens one
            continue
        if request.model not in prices:
            prices[request.model] = pricing.price_for(request.model)
        cost = credits.estimate_cost(
            request.model, request.prompt_tokens, request.max_completion_tokens, price=prices[request.model]
        )
        if account.balance < cost:  # alone, it is refused with its exact figures
            continue
        holds.append(
            credits.Hold(
                account=account,
                cost=cost,
                model=request.model,
                prompt_tokens=request.prompt_tokens,
                message_id=None,
                api_key_id=request.key.pk,
            )
        )
        indices.append(index)
    if not holds:
        return {}
    reservations = credits.reserve_many(holds)
    return {
        index: Admitted(reservation, hold.account.balance)
        for index, hold, reservation in zip(indices, holds, reservations, strict=True)
    }
