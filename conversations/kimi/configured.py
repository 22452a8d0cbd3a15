"""The Kimi client as the app configures it: the one place where the client meets Django's settings and cache.

``client.py`` itself takes everything as arguments, so it runs (and is tested) without Django's settings; snapshots
of the provider's account go through ``provider_state.py``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from conversations.kimi.client import KimiClient


def get_client(http=None) -> KimiClient:
    """A client configured from settings (cheap: the connection pool underneath is shared). ``http``: an
    httpx.AsyncClient of the caller's own, for calls made from a sync thread on a loop of their own (attachments),
    which must not replace the process's shared pool."""
    return KimiClient(
        base_url=settings.KIMI_BASE_URL,
        api_key=settings.KIMI_API_KEY,
        api_format=settings.KIMI_API_FORMAT,
        connect_timeout=settings.KIMI_CONNECT_TIMEOUT,
        read_timeout=settings.KIMI_READ_TIMEOUT,
        max_retries=settings.KIMI_MAX_RETRIES,
        retry_max_wait=settings.KIMI_RETRY_MAX_WAIT,
        # Not an environment setting: tests shorten the backoff through it.
        retry_base_delay=getattr(settings, "KIMI_RETRY_BASE_DELAY", 0.5),
        models_cache_seconds=settings.KIMI_MODELS_CACHE_SECONDS,
        fallback_models=settings.KIMI_FALLBACK_MODELS,
        # Optional: guessed from KIMI_BASE_URL when unset (see providers.provider_for_url).
        provider=settings.KIMI_PROVIDER or None,
        max_connections=settings.KIMI_MAX_CONNECTIONS,
        transport=settings.KIMI_HTTP_TRANSPORT,
        shared_cache=cache,
        http=http,
    )
