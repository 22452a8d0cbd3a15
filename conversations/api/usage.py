"""GET /api/usage/: the usage page's numbers as JSON, for the logged-in user only."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from conversations.services.billing.ratelimit import rate_limit_status
from conversations.services.billing.usage import summary_to_dict, usage_summary


@require_GET
def usage(request):
    summary = usage_summary(request.user)
    return JsonResponse(summary_to_dict(summary, rate_limit_status(request.user, summary.balance)))
