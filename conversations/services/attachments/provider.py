"""The provider's side of attachments: its files API (upload with purpose=file-extract, the extracted text,
deletion) and whether the chosen model takes images. Called from sync code (the upload view, deletions) on a loop
and an HTTP client of their own, so the process's shared connection pool is never replaced from another thread."""

from __future__ import annotations

import logging

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings

from conversations.kimi.configured import get_client
from conversations.kimi.errors import KimiError
from conversations.kimi.params import model_capabilities

logger = logging.getLogger(__name__)


def has_files_api() -> bool:
    """Moonshot has one (OpenAI format only: the Anthropic endpoint lives elsewhere); the gateways do not."""
    return get_client().provider.files_api and settings.KIMI_API_FORMAT == "openai"


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.KIMI_READ_TIMEOUT, connect=settings.KIMI_CONNECT_TIMEOUT)


@async_to_sync
async def extract_remotely(name: str, data: bytes, content_type: str) -> tuple[str, str]:
    """Upload the file for extraction and fetch its text: (provider file id, text). Raises KimiError. When the text
    cannot be fetched the uploaded file is deleted again, so nothing is left behind."""
    async with httpx.AsyncClient(timeout=_timeout()) as http:
        client = get_client(http=http)
        uploaded = await client.upload_file(name, data, content_type)
        try:
            text = await client.file_content(uploaded["id"])
        except KimiError:
            await _quietly_delete(client, uploaded["id"])
            raise
    return uploaded["id"], text


async def _quietly_delete(client, file_id: str) -> None:
    try:
        await client.delete_file(file_id)
    except KimiError as exc:
        logger.warning("could not delete provider file %s: %s", file_id, exc.code)


@async_to_sync
async def delete_remote(file_ids: list[str]) -> None:
    """Delete files at the provider; failures are logged, never raised (the local deletion already happened)."""
    async with httpx.AsyncClient(timeout=_timeout()) as http:
        client = get_client(http=http)
        for file_id in file_ids:
            await _quietly_delete(client, file_id)


async def _image_in(client, model: str) -> bool:
    # Images need the OpenAI format, whose content parts carry them.
    if settings.KIMI_API_FORMAT != "openai":
        return False
    info = await client.model_info()
    return bool(model_capabilities(model, info.get(model), client.provider)["image_in"])


async def atakes_images(model: str) -> bool:
    """The model takes images, as GET /models describes it (the name-based rules otherwise)."""
    return await _image_in(get_client(), model)


@async_to_sync
async def takes_images(model: str) -> bool:
    async with httpx.AsyncClient(timeout=_timeout()) as http:
        return await _image_in(get_client(http=http), model)
