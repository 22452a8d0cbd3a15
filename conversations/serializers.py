"""The one place a conversation or message becomes a dict, for the JSON API and the websocket frames alike."""

from __future__ import annotations

from conversations.models import Attachment, Conversation, Feedback, Message, Project


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def conversation_to_dict(conversation: Conversation) -> dict:
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "title_source": conversation.title_source,  # "" first message, "generated", "user"
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "settings": {
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "max_tokens": conversation.max_tokens,
            "json_mode": conversation.json_mode,
            "thinking": conversation.thinking,
            "reasoning_effort": conversation.reasoning_effort,
            "web_search": conversation.web_search,
        },
        "custom_instructions": conversation.custom_instructions,
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "project": conversation.project_id,  # the project's id, or null
        "temporary": conversation.temporary,  # kept out of history, deleted once closed
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }


def project_to_dict(project: Project, *, files: list[Attachment], conversation_count: int) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "color": project.color,
        "emoji": project.emoji,
        "instructions": project.instructions,
        "position": project.position,
        "archived": project.archived,
        "conversation_count": conversation_count,
        "files": [attachment_to_dict(a) for a in files],
        "created_at": _iso(project.created_at),
        "updated_at": _iso(project.updated_at),
    }


def attachment_to_dict(attachment: Attachment) -> dict:
    """What the owner sees of an attachment: never its text or bytes (those are fetched by id, owner-checked)."""
    return {
        "id": attachment.pk,
        "name": attachment.name,
        "kind": attachment.kind,
        "content_type": attachment.content_type,
        "bytes": attachment.size,
        "tokens": attachment.tokens,
        "width": attachment.width,
        "height": attachment.height,
        "status": attachment.status,
        "message_id": attachment.message_id,
        "created_at": _iso(attachment.created_at),
    }


def _attachments(message: Message) -> list[dict]:
    # Only user messages carry files; their rows are prefetched wherever messages are listed or published (the
    # publishing happens on the event loop, where a query would be an error).
    if message.role != Message.Role.USER or message.pk is None:
        return []
    return [attachment_to_dict(a) for a in message.attachments.all()]


def message_to_dict(message: Message, versions: dict | None = None) -> dict:
    """``versions``: where the message stands among its versions (``branches.versions_of``), where it was read."""
    return {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "status": message.status,
        "model": message.model,
        "finish_reason": message.finish_reason,
        "cut_off": message.cut_off,  # "length" | "reasoning_only" | null: the answer can be continued
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "total_tokens": message.total_tokens,
            "cached_tokens": message.cached_tokens,
            "estimated": message.usage_estimated,
        },
        "cost": str(message.cost),
        "error": {"code": message.error_code, "message": message.error_message} if message.error_code else None,
        "seq": message.seq,
        "searches": message.searches or [],
        "client_msg_id": str(message.client_msg_id) if message.client_msg_id else None,
        "superseded_by": message.superseded_by_id,  # set: off the active branch
        "parent_id": message.parent_id,  # the message it follows (null: the first turn)
        "versions": versions,  # {index, count, previous, next} if it has other versions (null in frames)
        "created_at": _iso(message.created_at),
        "completed_at": _iso(message.completed_at),
        "reasoning_ms": message.reasoning_ms,  # how long it thought before answering; null if unknown
        "attachments": _attachments(message),
        "feedback": _rating(message),
    }


def _rating(message: Message) -> str | None:
    """The owner's thumbs ("up"/"down") where the rows were read with it (``select_related("feedback")``: the chat's
    history); None otherwise. Never a query of its own: messages are also serialized on the event loop."""
    if not Message.feedback.is_cached(message):
        return None
    try:
        feedback = message.feedback  # cached: no query
    except Feedback.DoesNotExist:  # cached as missing: not rated
        return None
    return "up" if feedback.rating > 0 else "down"
