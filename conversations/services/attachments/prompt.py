"""What a message with attachments sends upstream, and what it weighs.

Documents go as their own system message just before the question they came with [doc: files] (so the prompt's
prefix stays stable for the provider's cache); images as ``image_url`` content parts with a base64 data URL
[doc: vision]. A turn's documents and images travel with it: trimming drops them together, and the newest turn is
never cut, so documents that do not fit are refused before sending, with their sizes, not silently shortened.
"""

from __future__ import annotations

import base64

from django.utils.translation import gettext as _

from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.models import Attachment, Message
from conversations.services.attachments import limits, storage
from conversations.services.attachments.limits import AttachmentRefused

BEFORE = "_before"  # the system messages that go just before a user turn; removed by ``expand``


def document_message(attachment: Attachment) -> dict:
    return {"role": "system", "content": f"Document: {attachment.name}\n\n{attachment.text}"}


def image_part(attachment: Attachment) -> dict:
    with storage.open_blob(attachment.storage_key) as blob:
        encoded = base64.b64encode(blob.read()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{attachment.content_type};base64,{encoded}"}}


def user_turn(message: Message) -> dict:
    """A user message as sent upstream, with its documents (under ``BEFORE``) and images."""
    attachments = list(message.attachments.all()) if message.pk is not None else []
    turn: dict = {"role": "user", "content": message.content}
    images = [a for a in attachments if a.kind == Attachment.Kind.IMAGE]
    if images:
        turn["content"] = [{"type": "text", "text": message.content}, *(image_part(a) for a in images)]
    documents = [document_message(a) for a in attachments if a.kind == Attachment.Kind.DOCUMENT]
    if documents:
        turn[BEFORE] = documents
    return turn


def turn_tokens(turn: dict) -> int:
    """The local estimate of a turn with what travels with it (a data URL's characters are not text tokens)."""
    images = (
        sum(1 for part in turn["content"] if part.get("type") == "image_url")
        if isinstance(turn.get("content"), list)
        else 0
    )
    return estimate_messages_locally([*turn.get(BEFORE, []), turn]) + images * limits.IMAGE_TOKENS


def expand(turns: list[dict]) -> list[dict]:
    messages = []
    for turn in turns:
        messages += turn.pop(BEFORE, [])
        messages.append(turn)
    return messages


def attachment_tokens(attachments: list[Attachment]) -> int:
    return sum(a.tokens for a in attachments)


def too_long(content: str, attachments: list[Attachment], *, system_tokens: int, window: int, reserve: int):
    """None when the message, its attachments and the system prompt fit the window with ``reserve`` tokens left
    for the answer; else the refusal, naming each file's size."""
    text = estimate_tokens_locally(content) + system_tokens + 4
    files = attachment_tokens(attachments)
    if text + files + reserve <= window:
        return None
    sizes = ", ".join(f"{a.name} ≈ {a.tokens:,}" for a in attachments)
    return AttachmentRefused(
        "context_too_long",
        _(
            "The attached files are about %(files)s tokens (%(sizes)s) and your message about %(text)s; with room "
            "for an answer that is more than the model's context window of %(window)s tokens. Remove a file, or "
            "pick a model with a larger window."
        )
        % {"files": f"{files:,}", "sizes": sizes, "text": f"{text:,}", "window": f"{window:,}"},
        tokens=text + files,
        window=window,
        attachment_tokens=files,
    )


def resolve(user, ids: list[int], *, reusable_from: Message | None = None) -> list[Attachment]:
    """The user's attachments for a send, in the order given: each must be theirs and not yet sent (or, for an
    edit, one of the edited message's own). Another user's id is answered like a missing one."""
    if len(ids) > limits.per_message():
        raise AttachmentRefused(
            "too_many_attachments",
            _("A message can carry at most %(limit)s files; this one has %(count)s.")
            % {"limit": limits.per_message(), "count": len(ids)},
        )
    # A project's files go with every chat of the project already; they are not a message's to take.
    found = {a.pk: a for a in Attachment.objects.for_user(user).filter(pk__in=ids, project__isnull=True)}
    result = []
    for attachment_id in ids:
        attachment = found.get(attachment_id)
        if attachment is None:
            raise AttachmentRefused(
                "not_found",
                _("No such attachment: %(id)s.") % {"id": attachment_id},
                status=404,
                attachment_id=attachment_id,
            )
        if attachment.message_id is not None and (reusable_from is None or attachment.message_id != reusable_from.pk):
            raise AttachmentRefused(
                "already_sent",
                _("The file %(name)s was already sent with another message; attach it again.")
                % {"name": attachment.name},
                attachment_id=attachment_id,
            )
        result.append(attachment)
    return result
