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
            "models": [
                {"id": model, "capabilities": model_capabilities(model, info.get(model), client.provider)}
                for model in ids
            ],
        }
    )
