"""GET /api/models/: the models the server offers and what each accepts, for the chat page's model picker and
settings panel (it shows only the settings the chosen model takes), with a name people read, the family that groups
its aliases, and its price in credits."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from conversations.kimi.configured import get_client
from conversations.kimi.names import display_name, family_name
from conversations.kimi.params import model_capabilities
from conversations.services.accounts import model_access
from conversations.services.billing.pricing import prices_in_effect


def _prices(models: list[str]) -> dict[str, dict]:
    """Each model's price as decimal strings (exact, like every credit amount the API sends); one query."""
    return {
        entry.model: {
            "per_request": str(entry.price.per_request),
            "per_million_prompt": str(entry.price.per_million_prompt),
            "per_million_completion": str(entry.price.per_million_completion),
            "per_million_cached": str(entry.price.per_million_cached),
        }
        for entry in prices_in_effect(models)
    }


@require_GET
async def models(request):
    client = get_client()
    # Only the models the user may use (their groups' allow-lists, services/accounts/model_access.py).
    allowed = await sync_to_async(model_access.allowed_models)(request.user)
    ids = model_access.visible(await client.list_models(), allowed)
    info = await client.model_info()  # the same cached GET /models: context_length, supports_* where sent
    default = settings.KIMI_DEFAULT_MODEL if settings.KIMI_DEFAULT_MODEL in ids else (ids[0] if ids else None)
    prices = await sync_to_async(_prices)(ids)
    return JsonResponse(
        {
            "default": default,
            "models": [
                {
                    "id": model,
                    "name": display_name(model),
                    "family": family_name(model),
                    "capabilities": _capabilities(client, model, info.get(model)),
                    "price": prices[model],
                }
                for model in ids
            ],
        }
    )


def _capabilities(client, model: str, info: dict | None) -> dict:
    capabilities = model_capabilities(model, info, client.provider)
    # The built-in search has no Anthropic-format shape [notes §8, §17 ?] (docs/tools.md).
    capabilities["web_search"] = capabilities["web_search"] and client.api_format == "openai"
    return capabilities
