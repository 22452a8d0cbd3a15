"""Attachments on the send path (called by services/chat/sending.py inside its transaction): which files a send,
edit or regenerate carries, the checks made before anything is stored (vision, the window), and linking them to the
stored user message."""

from __future__ import annotations

from django.db.models import prefetch_related_objects
from django.utils.translation import gettext as _

from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Attachment, Message
from conversations.services.attachments import prompt, provider, uploads
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.chat.context import answer_budget, context_window


def check_vision(files: list[Attachment], model: str) -> None:
    if any(a.kind == Attachment.Kind.IMAGE for a in files) and not provider.takes_images(model):
        raise uploads.refuse_images_for(model)


def check_fit(content: str, files: list[Attachment], *, model: str, system_prompt: str, max_tokens: int | None):
    """Refuse (with the files' sizes) a message whose documents and images leave no room for an answer."""
    if not files:
        return
    window = context_window(model)
    refusal = prompt.too_long(
        content,
        files,
        system_tokens=estimate_tokens_locally(system_prompt),
        window=window,
        reserve=min(answer_budget(max_tokens), window // 4),
    )
    if refusal is not None:
        raise refusal


def for_send(user, ids, *, model: str, content: str, system_prompt: str, max_tokens: int | None, previous=None):
    """The files a send (or an edit replacing ``previous``) carries, checked. ``ids`` None (an edit that names no
    files): ``previous``'s own files."""
    if ids is None:
        files = list(previous.attachments.all()) if previous is not None else []
    else:
        files = prompt.resolve(user, list(ids), reusable_from=previous)
    check_vision(files, model)
    check_fit(content, files, model=model, system_prompt=system_prompt, max_tokens=max_tokens)
    return files


def attach(message: Message, files: list[Attachment]) -> None:
    """Link the files to the stored user message: unsent ones move onto it, files of another (edited) message are
    copied, so the earlier version keeps its own. A file taken by a concurrent send is refused."""
    unsent = [a.pk for a in files if a.message_id is None]
    if unsent:
        moved = Attachment.objects.filter(pk__in=unsent, message__isnull=True).update(message=message)
        if moved != len(unsent):
            raise AttachmentRefused(
                "already_sent", _("A file was sent with another message meanwhile; attach it again.")
            )
    for attachment in files:
        if attachment.message_id is not None:
            uploads.copy_to_message(attachment, message)
    if files:
        prefetch_related_objects([message], "attachments")
    else:  # a message without files (most sends): known to have none, without asking the database
        # Filled as prefetch_related fills it: reading it compiles no query either (0.6 ms a send, measured). From
        # the model's manager, not the message's: the related manager builds its WHERE clause first (86 µs; 6 µs so).
        none = Attachment.objects.none()
        none._result_cache, none._prefetch_done = [], True
        message._prefetched_objects_cache = {"attachments": none}


def check_thread(thread: list[Message], model: str) -> None:
    """A regenerate with another model: the images already in the thread must suit it too."""
    files = [a for m in thread if m.role == Message.Role.USER for a in m.attachments.all()]
    check_vision(files, model)
