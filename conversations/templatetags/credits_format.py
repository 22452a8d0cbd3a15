"""``{{ amount|credits }}``: a credit amount without trailing zeros and with thousands separators."""

from decimal import Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

register = template.Library()


@register.filter
def credits(value) -> str:
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    # 6 stored places are noise for whole numbers ("100.000000"); normalize() also drops the exponent of 1E+2.
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return intcomma(whole) + (f".{fraction}" if fraction else "")


@register.filter
def signed_credits(value) -> str:
    amount = Decimal(value)
    return ("+" if amount > 0 else "") + credits(amount)
