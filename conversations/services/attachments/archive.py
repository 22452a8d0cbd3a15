"""Attachments in exports and imports: an export carries each file inline (base64, with its metadata), so one JSON
document or the ZIP of them is complete on its own; an import stores every file anew through the same checks as an
upload (``uploads.create_attachment``), and removes what it stored if the import fails."""

from __future__ import annotations

import base64
import binascii

from conversations.models import Attachment, Message
from conversations.serializers import attachment_to_dict
from conversations.services.attachments import cleanup, storage


def exported(message: Message) -> list[dict]:
    entries = []
    for attachment in message.attachments.all() if message.role == Message.Role.USER else []:
        with storage.open_blob(attachment.storage_key) as blob:
            data = base64.b64encode(blob.read()).decode("ascii")
        entry = {k: v for k, v in attachment_to_dict(attachment).items() if k not in ("id", "message_id")}
        entries.append({**entry, "data": data})
    return entries


def parse_entries(value, field: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file in an imported message; ValueError naming the field when malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{field}' must be a list")
    files = []
    for index, entry in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"'{where}' must be an object with a 'name'")
        if not isinstance(entry.get("data"), str):
            raise ValueError(f"'{where}.data' must hold the file as base64")
        try:
            data = base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"'{where}.data' is not valid base64") from None
        files.append((entry["name"], data))
    return files


def discard(stored: list[Attachment]) -> None:
    """After a failed import (its rows rolled back): remove the blobs and provider files no row uses any more."""
    for attachment in stored:
        cleanup.release(attachment.storage_key, attachment.provider_file_id)
