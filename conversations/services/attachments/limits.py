"""The limits on attachments (settings, docs/attachments.md) and the one refusal every check raises."""

from __future__ import annotations

from django.conf import settings

IMAGE_TOKENS = 1024  # flat per image [doc: help]; Kimi's own count is dynamic [doc: vision], so this is an estimate
DOCUMENT_OVERHEAD_TOKENS = 16  # the system message's role markers and the file name heading
MAX_ZIP_ENTRIES = 10_000
ZIP_RATIO_FLOOR = 1024 * 1024  # entries smaller than this are never called bombs, whatever their ratio


class AttachmentRefused(Exception):
    """A file (or a send naming files) that is not accepted. ``message`` is translated, for the user; nothing of it
    was stored."""

    def __init__(self, code: str, message: str, *, status: int = 400, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


def max_bytes() -> int:
    return settings.KIMICHAT_ATTACHMENT_MAX_BYTES


def per_message() -> int:
    return settings.KIMICHAT_ATTACHMENTS_PER_MESSAGE


def user_quota() -> int:
    return settings.KIMICHAT_ATTACHMENT_USER_QUOTA_BYTES


def max_pixels() -> int:
    return settings.KIMICHAT_ATTACHMENT_MAX_PIXELS


def image_max_side() -> int:
    return settings.KIMICHAT_ATTACHMENT_IMAGE_MAX_SIDE


def max_unzipped() -> int:
    return settings.KIMICHAT_ATTACHMENT_MAX_UNZIPPED_BYTES


def max_zip_ratio() -> int:
    return settings.KIMICHAT_ATTACHMENT_MAX_ZIP_RATIO


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
