"""The providers' published prices per million tokens, in US dollars: the default price of a model with no
ModelPrice row, converted to credits at ``KIMICHAT_CREDIT_VALUE_USD``. docs/credits.md shows the table and sources.

With open sign-up a default is what strangers spend, so every default must cover what the provider charges:
a model not listed here gets the ``KIMICHAT_DEFAULT_PRICE_*`` settings, whose defaults are deliberately dearer
than any published Kimi price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MOONSHOT = "platform.moonshot.ai/docs/pricing/chat (2026-03)"
PUTER = "developer.puter.com/tutorials/kimi-api-pricing (2026-06, Moonshot's rates)"
LAVA = "lavapayments.com/docs/reference/providers/moonshot (Moonshot's rates)"
AGENTSAPIS = "agentsapis.com/kimi-api/k2-pricing (2026-02, Moonshot's rates)"


@dataclass(frozen=True, slots=True)
class PublishedPrice:
    prompt: Decimal  # US$ per million uncached prompt tokens (Moonshot: "input, cache miss")
    cached: Decimal  # US$ per million prompt tokens served from the cache ("input, cache hit")
    completion: Decimal  # US$ per million completion tokens, reasoning included
    source: str


def _usd(prompt: str, cached: str, completion: str, source: str) -> PublishedPrice:
    return PublishedPrice(Decimal(prompt), Decimal(cached), Decimal(completion), source)


K2 = _usd("0.60", "0.15", "2.50", MOONSHOT)
K2_TURBO = _usd("1.15", "0.15", "8.00", LAVA)
# Keys are model ids; a key also prices the ids that extend it after a "-" ("kimi-k2.6-preview",
# "moonshot-v1-8k-vision-preview"), the longest such key winning. Never a bare prefix: "kimi-k2" must not price
# an unknown "kimi-k2.9" at K2's rate. Where no cached price is published, the uncached one is used.
PRICES: dict[str, PublishedPrice] = {
    "kimi-k2.7": _usd("0.95", "0.19", "4.00", PUTER),
    "kimi-k2.6": _usd("0.95", "0.16", "4.00", PUTER),
    "kimi-k2.5": _usd("0.60", "0.10", "3.00", MOONSHOT),
    "kimi-k2-thinking-turbo": K2_TURBO,
    "kimi-k2-turbo": K2_TURBO,
    "kimi-k2-thinking": K2,
    "kimi-k2-0905-preview": K2,
    "kimi-k2-0711-preview": K2,
    "kimi-k2": K2,  # the gateways' names of K2 0905 / 0711
    "kimi-k2-0905": K2,
    "kimi-k2-instruct": K2,
    "moonshot-v1-8k": _usd("0.20", "0.20", "2.00", AGENTSAPIS),
    "moonshot-v1-32k": _usd("1.00", "1.00", "3.00", AGENTSAPIS),
    "moonshot-v1-128k": _usd("2.00", "2.00", "5.00", AGENTSAPIS),
    "moonshot-v1-auto": _usd("2.00", "2.00", "5.00", AGENTSAPIS),  # picks up to 128k: the dearest tier is safe
}


def published_price(model: str) -> PublishedPrice | None:
    """The published price of ``model``, or None when it is not known (then the conservative default applies)."""
    name = model.strip().lower()
    keys = [key for key in PRICES if name == key or name.startswith(key + "-")]
    return PRICES[max(keys, key=len)] if keys else None
