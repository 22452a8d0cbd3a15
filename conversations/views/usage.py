"""The usage page: balance, spending, charts and the ledger. Thin: the numbers come from services.usage."""

from django.shortcuts import render

from conversations.services.billing.charts import usage_charts
from conversations.services.billing.ratelimit import rate_limit_status, tier_for
from conversations.services.billing.usage import usage_summary


def usage(request):
    summary = usage_summary(request.user)
    context = {
        "summary": summary,
        "charts": usage_charts(summary.daily, summary.hourly),
        "tier": tier_for(summary.balance),
        "rate_limits": rate_limit_status(request.user, summary.balance),
    }
    return render(request, "conversations/usage.html", context)
