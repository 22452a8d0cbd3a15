"""What a web search costs in credits (docs/credits.md, docs/tools.md).

Moonshot charges $0.005 per ``$web_search`` call (a response with ``tool_calls``) plus the search tokens, which come
back as prompt tokens of the next call [notes §8]. The fee is a model's ``ModelPrice.per_search`` when set, else
``WEB_SEARCH_FEE_USD`` converted at ``CREDIT_VALUE_USD`` dollars a credit (0.005 / 0.01 = 0.5 credits).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from conversations.models import ModelPrice
from conversations.services.billing.pricing import quantize


def default_search_fee() -> Decimal:
    return quantize(Decimal(settings.KIMICHAT_WEB_SEARCH_FEE_USD) / Decimal(settings.KIMICHAT_CREDIT_VALUE_USD))


def search_fee(model: str) -> Decimal:
    """Credits per search for ``model``. One query."""
    value = ModelPrice.objects.filter(model=model).values_list("per_search", flat=True).first()
    return default_search_fee() if value is None else quantize(max(Decimal(value), Decimal(0)))
