"""What a chat's project adds upstream: its instructions, in front of the chat's own system prompt, and its files'
text, as document system messages right after it (the stable start of every prompt of the project's chats, which
Kimi's prefix cache serves). Called by ``services/chat/sending.py`` when it builds the request."""

from __future__ import annotations

from conversations.models import Attachment, Conversation
from conversations.services.attachments import prompt as attachment_prompt


def system_prompt(conversation: Conversation, own_prompt: str) -> str:
    """``own_prompt`` (the chat's system prompt) after the project's instructions, a blank line between them."""
    project = conversation.project if conversation.project_id else None
    instructions = project.instructions.strip() if project is not None else ""
    return "\n\n".join(part for part in (instructions, own_prompt) if part.strip())


def documents(conversation: Conversation) -> list[dict]:
    """The project's documents as system messages, oldest file first, as a chat's attached documents go."""
    if not conversation.project_id:
        return []
    files = Attachment.objects.filter(project_id=conversation.project_id, kind=Attachment.Kind.DOCUMENT)
    return [attachment_prompt.document_message(a) for a in files.order_by("id")]
