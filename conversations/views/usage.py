"""The usage page: balance, spending, charts and the ledger. Thin: the numbers come from services.usage."""

from django.shortcuts import render

from conversations.services.billing.budgets import budget_status
from conversations.services.billing.charts import usage_charts
from conversations.services.billing.ratelimit import rate_limit_status, tier_for
from conversations.services.billing.usage import usage_summary


def usage(request, *, budget_form=None, status=200):
    from conversations.views.budget import own_caps_form  # noqa: PLC0415 (it imports this module)

    summary = usage_summary(request.user)
    budget = budget_status(request.user)  # spending caps (services/billing/budgets.py)
    context = {
        "summary": summary,
        "charts": usage_charts(summary.daily, summary.hourly),
        "tier": tier_for(summary.balance),
        "rate_limits": rate_limit_status(request.user, summary.balance),
        "budget": budget,
        "budget_form": budget_form or own_caps_form(request.user, status=budget),
    }
    return render(request, "conversations/usage.html", context, status=status)
