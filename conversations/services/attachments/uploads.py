"""An upload becomes an Attachment, or nothing: check (size, type from the bytes, quota, vision, the text) → do
(the blob, then the row, in one transaction; the blob removed again if the row is not written).

The same file uploaded again by the same user reuses the stored blob, its text and the provider's file: stored once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext as _

from conversations.kimi.errors import KimiError
from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Attachment
from conversations.services.attachments import images, isolation, limits, provider, storage
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.attachments.sniffing import IMAGE, Sniffed, sniff

logger = logging.getLogger(__name__)

MAX_NAME = 255


def clean_name(name: str) -> str:
    """The file's own name (no directories), printable, at most 255 characters; shown, never used as a path."""
    base = os.path.basename((name or "").replace("\\", "/"))
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if len(base) > MAX_NAME:
        stem, dot, extension = base.rpartition(".")
        base = (stem[: MAX_NAME - len(extension) - 1] + dot + extension) if dot and len(extension) < 16 else base
        base = base[:MAX_NAME]
    return base or "file"


def check_size(size: int) -> None:
    if size == 0:
        raise AttachmentRefused("empty_file", _("The file is empty (0 bytes)."))
    if size > limits.max_bytes():
        raise AttachmentRefused(
            "too_large",
            _("The file is %(size)s; the limit is %(limit)s per file.")
            % {"size": limits.megabytes(size), "limit": limits.megabytes(limits.max_bytes())},
            status=413,
        )


def refuse_images_for(model: str) -> AttachmentRefused:
    return AttachmentRefused(
        "images_not_supported",
        _("The model %(model)s does not read images. Pick a model that does, or remove the image.") % {"model": model},
    )


def _stored_bytes(user) -> int:
    # One blob per distinct file: rows sharing a sha256 share its bytes.
    return sum(dict(Attachment.objects.for_user(user).values_list("sha256", "size")).values())


def _check_quota(user, size: int) -> None:
    used = _stored_bytes(user)
    if used + size > limits.user_quota():
        raise AttachmentRefused(
            "quota_exceeded",
            _(
                "Your files take %(used)s of your %(limit)s; this one (%(size)s) does not fit. "
                "Delete old conversations with files to make room."
            )
            % {
                "used": limits.megabytes(used),
                "limit": limits.megabytes(limits.user_quota()),
                "size": limits.megabytes(size),
            },
            status=413,
        )


def _document_text(name: str, data: bytes, sniffed: Sniffed) -> tuple[str, str]:
    """(text, provider file id): the provider's extraction where it has a files API, else (or when it fails) our
    own. A PDF is opened locally first either way, so an encrypted or damaged one gets the same clear refusal."""
    if provider.has_files_api():
        if sniffed.label == "pdf":  # local extraction checks it itself; the provider's must not see a bad one
            isolation.check_pdf(data)
        try:
            file_id, text = provider.extract_remotely(name, data, sniffed.content_type)
            return text.strip(), file_id
        except KimiError as exc:
            # The provider refused or failed (its 1,000-file limit, an outage): the text can still be had here.
            logger.warning("provider extraction failed (%s); extracting locally", exc.code)
    return isolation.extract_text(data, sniffed), ""


def _copy_of(existing: Attachment, user, name: str) -> Attachment:
    return Attachment.objects.create(
        owner=user,
        kind=existing.kind,
        name=name,
        content_type=existing.content_type,
        size=existing.size,
        sha256=existing.sha256,
        storage_key=existing.storage_key,
        text=existing.text,
        tokens=existing.tokens,
        width=existing.width,
        height=existing.height,
        provider_file_id=existing.provider_file_id,
    )


def copy_to_message(attachment: Attachment, message) -> Attachment:
    """Another row for the same stored file, on ``message`` (an edited message keeps its files; the earlier
    version keeps its own)."""
    copy = _copy_of(attachment, attachment.owner, attachment.name)
    copy.message = message
    copy.save(update_fields=["message"])
    return copy


def create_attachment(user, *, name: str, data: bytes, model: str | None = None) -> Attachment:
    """Check and store one uploaded file. ``model``: the model the message will go to, when known, so an image for
    a model without vision is refused before anything is stored."""
    name = clean_name(name)
    check_size(len(data))
    sha256 = hashlib.sha256(data).hexdigest()
    existing = Attachment.objects.for_user(user).filter(sha256=sha256).order_by("id").first()
    if existing is not None:
        if existing.kind == Attachment.Kind.IMAGE and model and not provider.takes_images(model):
            raise refuse_images_for(model)
        return _copy_of(existing, user, name)
    sniffed = sniff(data, name)
    if sniffed.kind == IMAGE and model and not provider.takes_images(model):
        raise refuse_images_for(model)
    _check_quota(user, len(data))
    fields: dict = {"kind": sniffed.kind, "content_type": sniffed.content_type}
    stored = data
    if sniffed.kind == IMAGE:
        encoded = images.reencode(data, sniffed)
        stored = encoded.data
        fields.update(content_type=encoded.content_type, width=encoded.width, height=encoded.height)
        fields["tokens"] = limits.IMAGE_TOKENS
    else:
        text, file_id = _document_text(name, data, sniffed)
        if not text.strip():
            if file_id:
                provider.delete_remote([file_id])
            raise AttachmentRefused(
                "no_text",
                _("No text could be read from this file (a scanned document or an empty one?)."),
            )
        fields.update(text=text, provider_file_id=file_id)
        fields["tokens"] = estimate_tokens_locally(text) + limits.DOCUMENT_OVERHEAD_TOKENS
    key, written = storage.save_blob(storage.blob_key(user.pk, sha256), stored)
    try:
        with transaction.atomic():
            # Checked again under a lock of the user's row: uploads that overlapped (both past the early check while
            # extracting) store one at a time, and the later one sees the earlier one's bytes.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            if not Attachment.objects.for_user(user).filter(sha256=sha256).exists():
                _check_quota(user, len(stored))
            return Attachment.objects.create(
                owner=user, name=name, size=len(stored), sha256=sha256, storage_key=key, **fields
            )
    except Exception:
        if written:
            storage.delete_blob(key)
        if fields.get("provider_file_id"):
            provider.delete_remote([fields["provider_file_id"]])
        raise


def delete_unsent(attachment: Attachment) -> None:
    """Remove an attachment that is not part of a sent message (its file goes with the last row using it)."""
    if attachment.message_id is not None:
        raise AttachmentRefused(
            "attached",
            _("This file belongs to a sent message; delete the message or the conversation instead."),
            status=409,
        )
    attachment.delete()
