"""A user's usage, for the usage page and /api/usage/: balance, spending, requests and tokens over time, per model.

Every figure of consumption comes from the credit ledger, never from messages: imported conversations (which were
never answered here) cannot inflate them, a charged answer that failed mid-stream counts as the request it was,
and deleting a conversation changes nothing (the ledger rows keep their model and tokens). A request is an answer
whose reservation was settled; released reservations (failed requests, refunded in full) are not requests.

Everything is aggregated in the database with a fixed number of queries, however much history there is:
1 the account with the credits consumed, 2 answers per day, 3 answers per hour, 4 answers per model,
5 the recent ledger rows, 6 the prices set in the admin, and for staff 7 the latest provider snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncHour
from django.utils import timezone

from conversations.models import CreditAccount, CreditTransaction, ProviderSnapshot
from conversations.services.billing.pricing import PriceInEffect, known_models, prices_in_effect, quantize

DAYS = 30
HOURS = 48
RECENT_TRANSACTIONS = 15
ZERO = Decimal(0)
State = CreditTransaction.State
# The settled reservation row of each answer paid for: one request, with the answer's tokens.
TOKEN_SUMS = {
    "requests": Count("id"),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "cached_tokens": Coalesce(Sum("cached_tokens"), 0),
}


@dataclass(slots=True)
class Bucket:
    start: datetime | date
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UsageSummary:
    balance: Decimal
    consumed: Decimal  # credits spent on answers: charges less refunds
    daily: list[Bucket]  # the last DAYS days, oldest first, today last; days without answers are zeros
    hourly: list[Bucket]  # the last HOURS hours, the current hour last
    models: list[ModelUsage]  # all time, most requests first
    transactions: list[CreditTransaction]  # newest first
    provider: ProviderSnapshot | None = None  # staff only
    prices: list[PriceInEffect] = field(default_factory=list)  # what each offered model costs now
    requests: int = field(init=False)
    prompt_tokens: int = field(init=False)
    completion_tokens: int = field(init=False)
    cached_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.requests = sum(m.requests for m in self.models)
        self.prompt_tokens = sum(m.prompt_tokens for m in self.models)
        self.completion_tokens = sum(m.completion_tokens for m in self.models)
        self.cached_tokens = sum(m.cached_tokens for m in self.models)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cached_percent(self) -> int:
        """The share of prompt tokens the provider served from its cache (billed at the cached price)."""
        return round(100 * self.cached_tokens / self.prompt_tokens) if self.prompt_tokens else 0

    @property
    def average_tokens_per_request(self) -> int:
        return round(self.tokens / self.requests) if self.requests else 0


def _answers(user):
    """The user's answers paid for, one settled reservation row each."""
    return CreditTransaction.objects.filter(account__user_id=user.pk, state=State.SETTLED)


def _account_totals(user) -> tuple[Decimal, Decimal]:
    spending = Q(
        transactions__kind__in=[
            CreditTransaction.Kind.CHARGE,
            CreditTransaction.Kind.TITLE,
            CreditTransaction.Kind.REFUND,
        ]
    )
    row = (
        CreditAccount.objects.filter(user_id=user.pk)
        .annotate(spent=Sum("transactions__amount", filter=spending))
        .values_list("balance", "spent")
        .first()
    )
    if row is None:
        return ZERO, ZERO
    balance, spent = row
    # SQLite's SUM drops the column's scale; quantize so both databases give "1.000000". (0 - x avoids "-0".)
    return balance, quantize(ZERO - (spent or ZERO))


def _daily(user, now: datetime) -> list[Bucket]:
    tz = timezone.get_current_timezone()
    today = timezone.localtime(now, tz).date()
    first = today - timedelta(days=DAYS - 1)
    since = timezone.make_aware(datetime.combine(first, datetime.min.time()), tz)
    rows = (
        _answers(user)
        .filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**TOKEN_SUMS)
        .order_by()
    )
    found = {row.pop("day"): row for row in rows}
    days = [first + timedelta(days=i) for i in range(DAYS)]
    return [Bucket(start=day, **found.get(day, {})) for day in days]


def _hourly(user, now: datetime) -> list[Bucket]:
    tz = timezone.get_current_timezone()
    current = timezone.localtime(now, tz).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=HOURS - 1)
    rows = (
        _answers(user)
        .filter(created_at__gte=first)
        .annotate(hour=TruncHour("created_at", tzinfo=tz))
        .values("hour")
        .annotate(**TOKEN_SUMS)
        .order_by()
    )
    # Keyed by the instant, so the database's choice of time zone for the returned datetimes does not matter.
    found = {row.pop("hour").timestamp(): row for row in rows}
    hours = [first + timedelta(hours=i) for i in range(HOURS)]
    return [Bucket(start=hour, **found.get(hour.timestamp(), {})) for hour in hours]


def _per_model(user) -> list[ModelUsage]:
    # Every closed row of an answer (its reservation and the refund of the unused part) carries the model: the sum
    # of their amounts is what the answers cost, released reservations netting to zero.
    settled = Q(state=State.SETTLED)
    rows = (
        CreditTransaction.objects.filter(account__user_id=user.pk, model__gt="")
        .exclude(state=State.OPEN)
        .values("model")
        .annotate(
            requests=Count("id", filter=settled),
            prompt_tokens=Coalesce(Sum("prompt_tokens", filter=settled), 0),
            completion_tokens=Coalesce(Sum("completion_tokens", filter=settled), 0),
            cached_tokens=Coalesce(Sum("cached_tokens", filter=settled), 0),
            spent=Coalesce(Sum("amount"), ZERO),
        )
        .filter(requests__gt=0)
        .order_by("-requests", "model")
    )
    return [
        ModelUsage(**{k: v for k, v in row.items() if k != "spent"}, cost=quantize(ZERO - row["spent"])) for row in rows
    ]


def recent_transactions(user, limit: int = RECENT_TRANSACTIONS) -> list[CreditTransaction]:
    """The user's ledger as the user should read it: one row per answer with what it finally cost (its reservation
    net of the refund of the unused part), grants, bonuses and adjustments. Reservations still open and released
    ones (a failed request: charged and refunded in full) are left out; staff see every row in the admin. One
    query."""
    closing = CreditTransaction.objects.filter(reservation=OuterRef("pk")).order_by()
    rows = list(
        CreditTransaction.objects.filter(account__user_id=user.pk, reservation__isnull=True)
        .exclude(state__in=[State.OPEN, State.RELEASED])
        .select_related("api_key")  # an answer of the /v1/ API shows the key it was made with
        .annotate(
            closed=Subquery(closing.values("reservation").annotate(total=Sum("amount")).values("total")[:1]),
            last_balance=Subquery(closing.order_by("-pk").values("balance_after")[:1]),
        )
        .order_by("-created_at", "-pk")[:limit]
    )
    for row in rows:
        if row.closed is not None:
            row.amount = quantize(row.amount + row.closed)
            row.balance_after = row.last_balance
    return rows


def usage_summary(user, *, now: datetime | None = None) -> UsageSummary:
    """The user's usage; the provider snapshot is included for staff only."""
    now = now or timezone.now()
    balance, consumed = _account_totals(user)
    transactions = recent_transactions(user)
    provider = ProviderSnapshot.objects.order_by("-recorded_at", "-pk").first() if user.is_staff else None
    return UsageSummary(
        balance=balance,
        consumed=consumed,
        daily=_daily(user, now),
        hourly=_hourly(user, now),
        models=_per_model(user),
        transactions=transactions,
        provider=provider,
        prices=prices_in_effect(known_models()),
    )


def summary_to_dict(summary: UsageSummary, rate_limits=()) -> dict:
    """The JSON shape of /api/usage/. Credits are strings, so no client reads them as floats."""

    def bucket(b: Bucket) -> dict:
        return {
            "start": b.start.isoformat(),
            "requests": b.requests,
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "cached_tokens": b.cached_tokens,
        }

    data = {
        "balance": str(summary.balance),
        "consumed": str(summary.consumed),
        "requests": summary.requests,
        "tokens": {
            "prompt": summary.prompt_tokens,
            "completion": summary.completion_tokens,
            "cached": summary.cached_tokens,
            "total": summary.tokens,
        },
        "average_tokens_per_request": summary.average_tokens_per_request,
        "daily": [bucket(b) for b in summary.daily],
        "hourly": [bucket(b) for b in summary.hourly],
        "models": [
            {
                "model": m.model,
                "requests": m.requests,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "cached_tokens": m.cached_tokens,
                "cost": str(m.cost),
            }
            for m in summary.models
        ],
        "transactions": [
            {
                "id": t.pk,
                "kind": t.kind,
                "amount": str(t.amount),
                "balance_after": str(t.balance_after),
                "estimated": t.estimated,
                "note": t.note,
                "message_id": t.message_id,
                "created_at": t.created_at.isoformat(),
            }
            for t in summary.transactions
        ],
        "prices": [
            {
                "model": p.model,
                "per_request": str(quantize(p.price.per_request)),
                "per_million_prompt": str(quantize(p.price.per_million_prompt)),
                "per_million_cached": str(quantize(p.price.per_million_cached)),
                "per_million_completion": str(quantize(p.price.per_million_completion)),
            }
            for p in summary.prices
        ],
        "rate_limits": [
            {"window": s.window, "limit": s.limit, "used": s.used, "resets_in": s.resets_in} for s in rate_limits
        ],
    }
    if summary.provider is not None:
        p = summary.provider
        data["provider"] = {
            "balance": str(p.balance) if p.balance is not None else None,
            "credits_remaining": p.credits_remaining,
            "rate_limit": p.rate_limit,
            "source": p.source,
            "recorded_at": p.recorded_at.isoformat(),
        }
    return data
