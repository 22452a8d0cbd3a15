"""What an answer costs in credits: the model's price (a ModelPrice row, else its provider's published price, else
the settings' default) times its usage.

Prices are never negative and token counts below zero count as zero, so a cost is never negative: a negative cost
would be a refund in disguise (LibreChat once let a negative price raise balances).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.models import ModelPrice
from conversations.services.billing.published_prices import published_price

CREDIT_PLACES = Decimal("0.000001")  # CreditAccount.balance and every ledger amount have 6 decimal places
MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


class InvalidPrice(ValueError):
    """A price that is negative, not a number, or does not fit the credit columns."""


@dataclass(frozen=True, slots=True)
class Price:
    per_request: Decimal = ZERO
    per_million_prompt: Decimal = ZERO
    per_million_completion: Decimal = ZERO
    per_million_cached: Decimal = ZERO  # prompt tokens the provider served from its cache

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _price_value(f.name, getattr(self, f.name)))


def _price_value(name: str, value) -> Decimal:
    if isinstance(value, float):
        raise InvalidPrice(f"{name}: use a Decimal or a string, not a float ({value!r})")
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidPrice(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidPrice(f"{name} must be finite, got {value!r}")
    if number < 0:
        raise InvalidPrice(f"{name} cannot be negative, got {number}")
    if number >= Decimal(10) ** 12:
        raise InvalidPrice(f"{name} is too large, got {number}")
    return number


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(CREDIT_PLACES, rounding=ROUND_HALF_UP)


def default_price(model: str | None = None) -> Price:
    """The price of a model with no ModelPrice row: its provider's published price converted to credits (see
    published_prices), else the ``KIMICHAT_DEFAULT_PRICE_*`` settings, whose defaults are dearer than any published
    Kimi price. Either way ``KIMICHAT_DEFAULT_PRICE_PER_REQUEST`` is added per answer."""
    published = published_price(model) if model and settings.KIMICHAT_USE_PUBLISHED_PRICES else None
    if published is not None:
        return Price(
            per_request=settings.KIMICHAT_DEFAULT_PRICE_PER_REQUEST,
            per_million_prompt=in_credits(published.prompt),
            per_million_completion=in_credits(published.completion),
            per_million_cached=in_credits(published.cached),
        )
    return Price(
        per_request=settings.KIMICHAT_DEFAULT_PRICE_PER_REQUEST,
        per_million_prompt=settings.KIMICHAT_DEFAULT_PRICE_PER_MILLION_PROMPT,
        per_million_completion=settings.KIMICHAT_DEFAULT_PRICE_PER_MILLION_COMPLETION,
        per_million_cached=settings.KIMICHAT_DEFAULT_PRICE_PER_MILLION_CACHED,
    )


def in_credits(usd: Decimal) -> Decimal:
    """US dollars as credits at ``KIMICHAT_CREDIT_VALUE_USD``, rounded up: a default never undercharges."""
    return (Decimal(usd) / Decimal(settings.KIMICHAT_CREDIT_VALUE_USD)).quantize(CREDIT_PLACES, rounding=ROUND_CEILING)


def _row_price(row: ModelPrice) -> Price:
    # Price() re-validates: a row written around the service (raw SQL, a bad fixture) still cannot pay out.
    return Price(
        per_request=row.per_request,
        per_million_prompt=row.per_million_prompt,
        per_million_completion=row.per_million_completion,
        per_million_cached=row.per_million_cached,
    )


def price_for(model: str) -> Price:
    """The model's ModelPrice row, else its default price. One query."""
    row = ModelPrice.objects.filter(model=model).first()
    return default_price(model) if row is None else _row_price(row)


def prices_for(models) -> dict[str, Price]:
    """``price_for`` of many models, by model, in one query."""
    return {entry.model: entry.price for entry in prices_in_effect(list(dict.fromkeys(models)))}


def known_models() -> list[str]:
    """The models this server may answer with: the provider's list as last read, then the configured fallback
    list. Read from the cache only; the provider is not asked."""
    from conversations.kimi.configured import get_client

    listed = get_client().cached_model_ids() or []
    return list(dict.fromkeys([*listed, *settings.KIMI_FALLBACK_MODELS]))


@dataclass(frozen=True, slots=True)
class PriceInEffect:
    model: str
    price: Price
    origin: str  # "admin" (a ModelPrice row), "published" (the provider's price list) or "default" (settings)
    source: str = ""  # where the published price comes from


def prices_in_effect(models) -> list[PriceInEffect]:
    """What each of ``models`` costs now and why, for the usage page and the price admin. One query."""
    rows = {row.model: row for row in ModelPrice.objects.filter(model__in=list(models))}
    result = []
    for model in models:
        if model in rows:
            result.append(PriceInEffect(model, _row_price(rows[model]), "admin"))
            continue
        published = published_price(model) if settings.KIMICHAT_USE_PUBLISHED_PRICES else None
        origin, source = ("published", published.source) if published else ("default", "")
        result.append(PriceInEffect(model, default_price(model), origin, source))
    return result


def cost_of(price: Price, usage: Usage) -> Decimal:
    """per_request + uncached prompt + cached prompt + completion, each at its per-million price; 6 places."""
    prompt = max(usage.prompt_tokens, 0)
    cached = min(max(usage.cached_tokens, 0), prompt)  # cached tokens are part of the prompt, never more
    completion = max(usage.completion_tokens, 0)
    tokens = (
        (prompt - cached) * price.per_million_prompt
        + cached * price.per_million_cached
        + completion * price.per_million_completion
    )
    return quantize(price.per_request + tokens / MILLION)


def usage_cost(model: str, usage: Usage) -> Decimal:
    return cost_of(price_for(model), usage)


def set_price(model: str, **prices) -> ModelPrice:
    """Create or update a model's price; raises InvalidPrice for a negative or malformed value."""
    price = Price(**prices)  # validates, and rejects unknown names with a TypeError
    with transaction.atomic():
        row, _ = ModelPrice.objects.select_for_update().get_or_create(model=model)
        for f in fields(price):
            if f.name in prices:
                setattr(row, f.name, getattr(price, f.name))
        row.updated_at = timezone.now()
        try:
            row.full_clean()
        except ValidationError as exc:
            raise InvalidPrice("; ".join(exc.messages)) from None
        row.save()
    return row
