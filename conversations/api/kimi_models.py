"""GET /api/models/: the models the server offers and what each accepts, for the chat page's model picker and
settings panel (it shows only the settings the chosen model takes)."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from conversations.kimi.configured import get_client
from conversations.kimi.params import model_capabilities


@require_GET
async def models(request):
    client = get_client()
    ids = await client.list_models()
    info = await client.model_info()  # the same cached GET /models: context_length, supports_* where sent
    default = settings.KIMI_DEFAULT_MODEL if settings.KIMI_DEFAULT_MODEL in ids else (ids[0] if ids else None)
    return JsonResponse(
        {
            "default": default,
            "models": [{"id": model, "capabilities": _capabilities(client, model, info.get(model))} for model in ids],
        }
    )


def _capabilities(client, model: str, info: dict | None) -> dict:
    capabilities = model_capabilities(model, info, client.provider)
    # The built-in search has no Anthropic-format shape [notes §8, §17 ?] (docs/tools.md).
    capabilities["web_search"] = capabilities["web_search"] and client.api_format == "openai"
    return capabilities
