"""GET and PATCH /api/me/budget/: the spending caps that apply to the logged-in user, and their own caps.

PATCH {"daily": "5" | null, "monthly": ...}: a field left out is kept, null removes the user's own cap. A user sets
only their own caps, never above the ones staff set (services/billing/budgets.py)."""

from __future__ import annotations

import orjson
from django.http import JsonResponse
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods

from conversations.api.responses import error
from conversations.services.billing import budgets, credits

MAX_BODY_BYTES = 1024
MAX_CAP = 10**9


def _cap(body: dict, name: str, current):
    if name not in body:
        return current
    value = body[name]
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise budgets.InvalidOwnCap(name, gettext("A cap is a number of credits as a string, or null."))
    try:
        amount = credits.as_credits(value)
    except credits.InvalidAmount as exc:
        raise budgets.InvalidOwnCap(name, str(exc)) from None
    if amount < 0 or amount > MAX_CAP:
        raise budgets.InvalidOwnCap(name, gettext("A cap is between 0 and 1,000,000,000 credits."))
    return amount


@require_http_methods(["GET", "PATCH"])
def budget(request):
    if request.method == "PATCH":
        if len(request.body) > MAX_BODY_BYTES:
            return error("too_large", gettext("The body must be at most 1 KB."), 413)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return error("bad_json", gettext("The body is not valid JSON."), 400)
        if not isinstance(body, dict) or set(body) - {"daily", "monthly"}:
            return error("bad_parameter", gettext('The body is an object with "daily" and/or "monthly".'), 400)
        status = budgets.budget_status(request.user)
        try:
            daily = _cap(body, "daily", status.own_daily)
            monthly = _cap(body, "monthly", status.own_monthly)
            budgets.set_own_caps(request.user, daily=daily, monthly=monthly)
        except budgets.InvalidOwnCap as exc:
            return error("bad_parameter", str(exc), 400, field=exc.field)
    return JsonResponse(budgets.budget_status(request.user).as_dict())
