"""Attachment blobs in Django's storage API (``STORAGES["attachments"]``: var/media/ by default, anything
django-storages offers when configured). Never served from a URL: the API streams them after an ownership check."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import storages


def storage():
    return storages["attachments"]


def blob_key(owner_id: int, sha256: str) -> str:
    return f"attachments/{owner_id}/{sha256[:2]}/{sha256}"


def save_blob(key: str, data: bytes) -> tuple[str, bool]:
    """Store ``data`` under ``key`` unless it is there already; returns (key, written now)."""
    store = storage()
    if store.exists(key):
        return key, False
    saved = store.save(key, ContentFile(data))
    return saved, True


def open_blob(key: str):
    return storage().open(key, "rb")


def delete_blob(key: str) -> None:
    storage().delete(key)
