"""Keyset ("cursor") pagination: constant cost per page however deep, unlike OFFSET."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from django.db.models import Q


class BadCursor(ValueError):
    pass


def encode_cursor(updated_at: datetime, pk: int) -> str:
    raw = f"{updated_at.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, pk = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), int(pk)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("cursor is not one this server gave out") from exc


def after_cursor(cursor: str) -> Q:
    """Rows that come after the cursor in ``ORDER BY updated_at DESC, id DESC``."""
    updated_at, pk = decode_cursor(cursor)
    return Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, id__lt=pk)
