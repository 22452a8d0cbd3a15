"""``{{ amount|credits }}`` and ``{{ amount|signed_credits }}``: credits as people read them ("85.00"), by the one
rule of conversations/services/billing/credit_format.py."""

from django import template

from conversations.services.billing.credit_format import format_credits, format_signed_credits

register = template.Library()
credits = register.filter("credits", format_credits)
signed_credits = register.filter("signed_credits", format_signed_credits)
