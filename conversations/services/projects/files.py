"""A project's files: documents uploaded to the project, whose text goes with every chat of it (``context.py``).

An upload goes through the attachments' own checks (size, type from the bytes, quota, extraction: docs/attachments.md)
and then two of the project's: documents only (an image has no text to share), and the project's files together stay
within a share of the default model's window, so its chats keep room for their own turns. A refusal stores nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from conversations.models import Attachment, Project
from conversations.services.attachments import uploads
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.chat.context import context_window

MAX_FILES = 50  # per project
WINDOW_SHARE = 2  # a project's files may fill at most 1/WINDOW_SHARE of the default model's window


def token_limit() -> int:
    return context_window(settings.KIMI_DEFAULT_MODEL) // WINDOW_SHARE


def files_of(project: Project) -> list[Attachment]:
    return list(project.files.order_by("id"))


def add_file(project: Project, *, name: str, data: bytes) -> Attachment:
    """Store one uploaded document as the project's file, or refuse it (``AttachmentRefused``) storing nothing."""
    if project.files.count() >= MAX_FILES:
        raise AttachmentRefused(
            "too_many_attachments", _("A project can hold at most %(limit)s files.") % {"limit": MAX_FILES}
        )
    attachment = uploads.create_attachment(project.owner, name=name, data=data)
    try:
        if attachment.kind != Attachment.Kind.DOCUMENT:
            raise AttachmentRefused(
                "unsupported_type", _("A project holds documents only; attach images to a message instead.")
            )
        with transaction.atomic():
            locked = Project.objects.select_for_update().get(pk=project.pk)  # concurrent uploads count one by one
            used = sum(locked.files.values_list("tokens", flat=True))
            if used + attachment.tokens > token_limit():
                raise AttachmentRefused(
                    "context_too_long",
                    _(
                        "This file is about %(tokens)s tokens and the project's files already take %(used)s; together "
                        "they would exceed the %(limit)s tokens a project's files may use."
                    )
                    % {"tokens": f"{attachment.tokens:,}", "used": f"{used:,}", "limit": f"{token_limit():,}"},
                    tokens=attachment.tokens,
                    limit=token_limit(),
                )
            attachment.project = locked
            attachment.save(update_fields=["project"])
    except Exception:
        attachment.delete()  # its blob goes with the last row that uses it (attachments/cleanup.py)
        raise
    return attachment
