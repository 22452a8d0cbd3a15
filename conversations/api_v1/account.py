"""GET /v1/models and GET /v1/user/credits: what a key may use, and what its owner has left (seed 003)."""

from __future__ import annotations

import datetime

from django.contrib.auth.decorators import login_not_required
from django.views.decorators.http import require_GET

from conversations.api_v1 import common
from conversations.api_v1.common import ApiError
from conversations.kimi.configured import get_client
from conversations.kimi.names import display_name
from conversations.models import ApiKey
from conversations.services import db_threads
from conversations.services.accounts import model_access
from conversations.services.apikeys import metering
from conversations.services.billing import usage
from conversations.services.billing.ratelimit import RateLimited

MODELS_CREATED = 1735785600  # seed 003's ``created`` for every model: the upstream list carries no date


async def _counted(request, style: str):
    """(key, user, limits) of a request that reserves nothing but counts in the rate limit, or an error response."""
    lim = None
    try:
        key, user, _ = await common.authenticate(request)
        try:
            await db_threads.on_database_thread(metering.count_request)(user)
        except RateLimited as exc:
            raise ApiError(
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
                str(exc),
                retry_after=exc.retry_after,
                headers=(await common.limits(user)).headers(),
            ) from None
        return key, user, await common.limits(user), None
    except ApiError as exc:
        return None, None, None, common.with_headers(exc.response(style), lim)


def _style(request) -> str:
    return "anthropic" if "anthropic-version" in request.headers else "openai"


@login_not_required
@require_GET
async def models(request):
    _key, user, lim, refused = await _counted(request, _style(request))
    if refused is not None:
        return refused
    allowed = await db_threads.on_database_thread(model_access.allowed_models)(user)  # the groups' allow-lists
    ids = model_access.visible(await get_client().list_models(), allowed)
    if _style(request) == "anthropic":  # the anthropic SDK's models.list() reads Anthropic's page shape
        created = datetime.datetime.fromtimestamp(MODELS_CREATED, tz=datetime.UTC).isoformat()
        data = [
            {"type": "model", "id": model, "display_name": display_name(model), "created_at": created} for model in ids
        ]
        page = {
            "data": data,
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
        return common.with_headers(common.json_response(page), lim)
    data = [
        {
            "id": model,
            "object": "model",
            "created": MODELS_CREATED,
            "owned_by": "moonshot-ai",
            "root": model,
            "parent": None,
        }
        for model in ids
    ]
    return common.with_headers(common.json_response({"object": "list", "data": data}), lim)


def _credits(key: ApiKey, user, lim: metering.Limits) -> dict:
    key.refresh_from_db(fields=["requests", "credits_spent", "spending_cap", "expires_at"])
    spent = usage.usage_summary(user).consumed
    return {
        "object": "credits",
        "credits_remaining": f"{lim.balance.normalize():f}",
        "credits_used": f"{spent.normalize():f}",
        "key": {
            "prefix": key.prefix,
            "name": key.name,
            "requests": key.requests,
            "credits_spent": f"{key.credits_spent.normalize():f}",
            "spending_cap": None if key.spending_cap is None else f"{key.spending_cap.normalize():f}",
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    }


@login_not_required
@require_GET
async def user_credits(request):
    key, user, lim, refused = await _counted(request, _style(request))
    if refused is not None:
        return refused
    body = await db_threads.on_database_thread(_credits)(key, user, lim)
    return common.with_headers(common.json_response(body), lim)
