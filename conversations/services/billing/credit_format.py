"""How a credit amount is written for people, everywhere: pages, the admin, commands, and (``formatCredits`` in
static/js/texts.js) the browser. Both sides are tested against tests/fixtures/credit_format_cases.json.

The rule: thousands grouped with ",", two decimals ("85.00", "1,234.50"); an amount between 0 and 1 keeps up to
four ("0.0123", "0.50"); rounded half away from zero; "—" when there is no amount. The ledger keeps six decimal
places, which are noise to a reader ("1.000000 credits").
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

NO_AMOUNT = "—"


def format_credits(value) -> str:
    if value is None or value == "":
        return NO_AMOUNT
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not amount.is_finite():
        return str(value)
    places = 4 if 0 < abs(amount) < 1 else 2
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.00"
    text = f"{rounded:,f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")  # "0.5000" → "0.50", "0.0120" → "0.012"
    return f"{whole}.{fraction}"


def format_signed_credits(value) -> str:
    """A ledger amount: "+5.00" for a credit, "-1.01" for a charge."""
    text = format_credits(value)
    if text != NO_AMOUNT and not text.startswith("-") and Decimal(str(value)) > 0:
        return "+" + text
    return text
