"""Validate the frames a browser sends on the chat socket. Pure: dicts in, typed frames or a FrameError out.

Every refusal names what was wrong, with a stable code from docs/websocket-protocol.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.conf import settings

from conversations.services.history.changes import InvalidChange, check_changes
from conversations.services.text import NulCharacter, refuse_nul

MAX_ID = 2**63 - 1
MAX_MODEL_NAME = 100


class FrameError(Exception):
    def __init__(self, code: str, message: str, *, conversation_id: int | None = None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.conversation_id = conversation_id
        self.extra = extra


@dataclass(frozen=True)
class Send:
    conversation_id: int | None
    content: str
    client_msg_id: uuid.UUID
    model: str | None
    # For a new conversation only: its system prompt and generation settings, as validated model field values.
    new_conversation: dict = field(default_factory=dict)
    attachments: tuple[int, ...] = ()  # ids of the user's unsent attachments (docs/attachments.md)


@dataclass(frozen=True)
class Stop:
    conversation_id: int


@dataclass(frozen=True)
class Subscribe:
    conversation_id: int
    after_seq: int | None


@dataclass(frozen=True)
class Unsubscribe:
    conversation_id: int


@dataclass(frozen=True)
class Regenerate:
    conversation_id: int
    client_msg_id: uuid.UUID
    model: str | None


@dataclass(frozen=True)
class Edit:
    conversation_id: int
    message_id: int
    content: str
    client_msg_id: uuid.UUID
    attachments: tuple[int, ...] | None = None  # None: the edited message's own files are kept


@dataclass(frozen=True)
class Continue:
    conversation_id: int
    message_id: int
    client_msg_id: uuid.UUID


@dataclass(frozen=True)
class Ping:
    pass


Frame = Send | Stop | Subscribe | Unsubscribe | Regenerate | Edit | Continue | Ping


def _id(data: dict, name: str, *, nullable: bool = False) -> int | None:
    if name not in data:
        raise FrameError("bad_frame", f"'{name}' is missing")
    value = data[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError("bad_frame", f"'{name}' must be a whole number{' or null' if nullable else ''}")
    if not 1 <= value <= MAX_ID:
        raise FrameError("bad_frame", f"'{name}' must be a positive id")
    return value


def _content(data: dict) -> str:
    if "content" not in data:
        raise FrameError("bad_frame", "'content' is missing")
    content = data["content"]
    if not isinstance(content, str):
        raise FrameError("bad_frame", "'content' must be a string")
    if not content.strip():
        raise FrameError("empty_message", "The message is empty.")
    limit = settings.KIMICHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise FrameError(
            "message_too_long",
            f"The message is {len(content):,} characters long; the limit is {limit:,}.",
            limit=limit,
        )
    try:
        return refuse_nul(content, "content")
    except NulCharacter as exc:
        raise FrameError("bad_frame", str(exc)) from None


def _client_msg_id(data: dict) -> uuid.UUID:
    value = data.get("client_msg_id")
    if not isinstance(value, str):
        raise FrameError("bad_frame", "'client_msg_id' must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FrameError("bad_frame", "'client_msg_id' must be a UUID string") from None


def _model(data: dict) -> str | None:
    value = data.get("model")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_MODEL_NAME:
        raise FrameError("bad_frame", f"'model' must be a model name of at most {MAX_MODEL_NAME} characters")
    return value


def _attachments(data: dict) -> tuple[int, ...] | None:
    """The optional ``attachments`` list: distinct attachment ids, at most the per-message limit."""
    value = data.get("attachments")
    if value is None:
        return None
    limit = settings.KIMICHAT_ATTACHMENTS_PER_MESSAGE
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ID for v in value
    ):
        raise FrameError("bad_frame", "'attachments' must be a list of attachment ids")
    if len(set(value)) != len(value):
        raise FrameError("bad_frame", "'attachments' names the same attachment twice")
    if len(value) > limit:
        raise FrameError(
            "too_many_attachments",
            f"A message can carry at most {limit} files; this one has {len(value)}.",
            limit=limit,
        )
    return tuple(value)


NEW_CONVERSATION_FIELDS = frozenset({"system_prompt", "settings", "custom_instructions", "project", "temporary"})


def _new_conversation(data: dict, conversation_id: int | None) -> dict:
    """The optional ``conversation`` object of a send that starts a conversation: checked as a PATCH would be."""
    value = data.get("conversation")
    if value is None:
        return {}
    if conversation_id is not None:
        raise FrameError("bad_frame", "'conversation' is only for a send that starts a new conversation")
    if not isinstance(value, dict):
        raise FrameError("bad_frame", "'conversation' must be an object")
    unknown = sorted(set(value) - NEW_CONVERSATION_FIELDS)
    if unknown:
        raise FrameError(
            "bad_frame",
            "'conversation' takes only system_prompt, settings, custom_instructions, project and temporary, "
            f"not {unknown[0]!r}",
        )
    value = dict(value)
    temporary = value.pop("temporary", False)
    if not isinstance(temporary, bool):
        raise FrameError("bad_frame", "'conversation.temporary' must be true or false", field="conversation.temporary")
    try:
        return {**check_changes(value), **({"temporary": True} if temporary else {})}
    except InvalidChange as exc:
        # The message is the person's sentence; which field it was goes to programs in ``field``.
        raise FrameError("bad_frame", str(exc), field=f"conversation.{exc.field}".rstrip(".")) from None


def parse_frame(data: object) -> Frame:
    if not isinstance(data, dict):
        raise FrameError("bad_json", "A frame must be a JSON object.")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "'type' is missing or not a string")
    if kind == "send":
        conversation_id = _id(data, "conversation_id", nullable=True)
        try:
            return Send(
                conversation_id,
                _content(data),
                _client_msg_id(data),
                _model(data),
                _new_conversation(data, conversation_id),
                _attachments(data) or (),
            )
        except FrameError as exc:
            exc.conversation_id = conversation_id
            raise
    if kind == "stop":
        return Stop(_id(data, "conversation_id"))
    if kind == "subscribe":
        after = data.get("after_seq")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_ID):
            raise FrameError("bad_frame", "'after_seq' must be a whole number of at least 0")
        return Subscribe(_id(data, "conversation_id"), after)
    if kind == "unsubscribe":
        return Unsubscribe(_id(data, "conversation_id"))
    if kind == "regenerate":
        return Regenerate(_id(data, "conversation_id"), _client_msg_id(data), _model(data))
    if kind == "edit":
        return Edit(
            _id(data, "conversation_id"),
            _id(data, "message_id"),
            _content(data),
            _client_msg_id(data),
            _attachments(data),
        )
    if kind == "continue":
        conversation_id = _id(data, "conversation_id")
        try:
            return Continue(conversation_id, _id(data, "message_id"), _client_msg_id(data))
        except FrameError as exc:
            exc.conversation_id = conversation_id
            raise
    if kind == "ping":
        return Ping()
    raise FrameError("bad_frame", f"Unknown frame type {kind[:40]!r}.")
