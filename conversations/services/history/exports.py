"""Exporting conversations (Markdown, JSON, a ZIP of everything) and importing them back, or from ChatGPT.

The JSON format ``kimichat.conversation.v1`` is documented in docs/api.md. Imports never trust the file: ids in it
are only references between its own messages, every row is created anew and owned by the importer, and usage and
cost are not imported (they describe charges made elsewhere; importing them would count them twice in usage reports).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.text import slugify

from conversations.models import Attachment, Conversation, Message
from conversations.serializers import conversation_to_dict, message_to_dict
from conversations.services.attachments import archive as attachment_archive
from conversations.services.attachments import uploads
from conversations.services.attachments.limits import AttachmentRefused

FORMAT = "kimichat.conversation.v1"
MAX_IMPORT_BYTES = 20 * 1024 * 1024  # fixed, not a setting: it bounds the memory one request can take
MAX_IMPORT_CONVERSATIONS = 10_000
MAX_IMPORT_MESSAGES = 200_000
MAX_ZIP_MEMBERS = MAX_IMPORT_CONVERSATIONS
MAX_EXPORT_BYTES = 200 * 1024 * 1024  # uncompressed; beyond it the ZIP would take too long to build in one request
EXPORT_CHUNK = 200  # conversations whose messages are read in one query
SPOOL_BYTES = 10 * 1024 * 1024  # the ZIP stays in memory up to this, then moves to a temporary file
ROLES = {Message.Role.USER, Message.Role.ASSISTANT, Message.Role.SYSTEM}


class ImportRejected(ValueError):
    """The file cannot be imported; ``code`` is the API error code, ``field`` where in the file (if known)."""

    def __init__(self, message: str, *, code: str = "bad_import", field: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field


class ExportTooLarge(Exception):
    pass


# --- export ---------------------------------------------------------------------------------------------------


def filename_for(conversation: Conversation, extension: str) -> str:
    slug = slugify(conversation.title)[:60].strip("-") or "conversation"
    return f"kimichat-{conversation.pk}-{slug}.{extension}"


# The export keeps the API's message shape, less what only matters to a live socket or to this server's rows.
_NOT_EXPORTED = frozenset({"conversation_id", "seq", "client_msg_id"})


def _message_entry(message: Message) -> dict:
    entry = {key: value for key, value in message_to_dict(message).items() if key not in _NOT_EXPORTED}
    entry["attachments"] = attachment_archive.exported(message)  # the files inline: the export is complete
    return entry


def conversation_document(conversation: Conversation, messages: Iterable[Message]) -> dict:
    """The ``kimichat.conversation.v1`` document: every message, earlier versions included, oldest first."""
    data = conversation_to_dict(conversation)
    return {
        "format": FORMAT,
        "exported_at": timezone.now().isoformat(),
        "conversation": data,
        "messages": [_message_entry(m) for m in messages],
    }


def export_json(conversation: Conversation) -> bytes:
    messages = Message.objects.filter(conversation=conversation).order_by("id").prefetch_related("attachments")
    return orjson.dumps(conversation_document(conversation, messages), option=orjson.OPT_INDENT_2)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def _usage_line(message: Message) -> str:
    if not message.total_tokens:
        return ""
    estimated = " (estimated)" if message.usage_estimated else ""
    return (
        f"*Tokens: {message.prompt_tokens} prompt · {message.completion_tokens} completion · "
        f"{message.total_tokens} total{estimated} · cost {message.cost}*"
    )


def export_markdown(conversation: Conversation) -> str:
    """The current thread as a Markdown document: what the user sees on the chat page, not earlier versions."""
    messages = (
        Message.objects.filter(conversation=conversation).current().order_by("id").prefetch_related("attachments")
    )
    lines = [f"# {conversation.title or 'Untitled conversation'}", ""]
    lines.append(f"*Model: {conversation.model} · created {conversation.created_at:%Y-%m-%d %H:%M} UTC*")
    if conversation.system_prompt:
        lines += ["", "**System prompt**", "", _quote(conversation.system_prompt)]
    for message in messages:
        heading = message.get_role_display()
        if message.role == Message.Role.ASSISTANT and message.model:
            heading += f" ({message.model})"
        lines += ["", f"## {heading}", ""]
        if message.reasoning:
            # <details> keeps long reasoning folded on GitHub and most viewers; the blank lines let the quote
            # inside be read as Markdown.
            lines += ["<details><summary>Reasoning</summary>", "", _quote(message.reasoning), "", "</details>", ""]
        lines.append(message.content)
        files = message.attachments.all() if message.role == Message.Role.USER else []
        if files:  # listed, not inlined: the files themselves are in the ZIP export
            lines += ["", *(f"- Attached: {a.name} ({a.content_type}, {a.size:,} bytes)" for a in files)]
        if message.status not in (Message.Status.COMPLETE,):
            lines += ["", f"*Status: {message.get_status_display()}*"]
        if message.error_message:
            lines += ["", f"*Error: {message.error_message}*"]
        usage = _usage_line(message)
        if usage:
            lines += ["", usage]
    return "\n".join(lines).rstrip() + "\n"


def export_all_zip(user):
    """A ZIP with one ``kimichat.conversation.v1`` JSON per conversation; returns a file object at position 0.

    Messages are read ``EXPORT_CHUNK`` conversations per query. The archive spills to a temporary file once it is
    larger than ``SPOOL_BYTES``; past ``MAX_EXPORT_BYTES`` of JSON it raises ``ExportTooLarge``.
    """
    archive = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by the response
    written = 0
    conversations = list(Conversation.objects.for_user(user).order_by("id"))
    try:
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for start in range(0, len(conversations), EXPORT_CHUNK):
                chunk = conversations[start : start + EXPORT_CHUNK]
                by_conversation: dict[int, list[Message]] = {c.pk: [] for c in chunk}
                messages = Message.objects.filter(conversation_id__in=by_conversation).prefetch_related("attachments")
                for message in messages.order_by("id"):
                    by_conversation[message.conversation_id].append(message)
                for conversation in chunk:
                    document = orjson.dumps(conversation_document(conversation, by_conversation[conversation.pk]))
                    written += len(document)
                    if written > MAX_EXPORT_BYTES:
                        raise ExportTooLarge
                    zf.writestr(filename_for(conversation, "json"), document)
    except BaseException:
        archive.close()
        raise
    archive.seek(0)
    return archive


# --- import ---------------------------------------------------------------------------------------------------


def _parse_time(value, field: str) -> datetime | None:
    """ISO strings (our format) or Unix seconds (ChatGPT's); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ImportRejected(f"'{field}' is not a time", field=field)
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ImportRejected(f"'{field}' is not a time", field=field) from None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is None:
            raise ImportRejected(f"'{field}' is not an ISO 8601 time", field=field)
        return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)
    raise ImportRejected(f"'{field}' is not a time", field=field)


def _text(value, field: str, *, max_chars: int | None = None, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ImportRejected(f"'{field}' must be a string", field=field)
    return value[:max_chars] if max_chars else value


class _Draft:
    """A conversation to create, with its messages; ``ref``/``replaced_by`` link versions inside the file only."""

    def __init__(self, *, title: str, model: str, system_prompt: str, created_at, updated_at, extra: dict):
        self.title = title
        self.model = model
        self.system_prompt = system_prompt
        self.created_at = created_at
        self.updated_at = updated_at
        self.extra = extra
        self.messages: list[dict] = []


def _files(value, field: str) -> list[tuple[str, bytes]]:
    try:
        return attachment_archive.parse_entries(value, field)
    except ValueError as exc:
        raise ImportRejected(str(exc), field=field) from None


def _kimichat_draft(document, where: str) -> _Draft:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ImportRejected(f"{where} is not a {FORMAT} document", field=where)
    conversation = document.get("conversation")
    messages = document.get("messages")
    if not isinstance(conversation, dict):
        raise ImportRejected(f"'{where}.conversation' must be an object", field=f"{where}.conversation")
    if not isinstance(messages, list):
        raise ImportRejected(f"'{where}.messages' must be a list", field=f"{where}.messages")
    settings_in = conversation.get("settings") or {}
    if not isinstance(settings_in, dict):
        raise ImportRejected(
            f"'{where}.conversation.settings' must be an object", field=f"{where}.conversation.settings"
        )
    created = _parse_time(conversation.get("created_at"), f"{where}.conversation.created_at")
    draft = _Draft(
        title=_text(conversation.get("title"), f"{where}.conversation.title", max_chars=200).strip(),
        model=_text(conversation.get("model"), f"{where}.conversation.model", max_chars=100).strip(),
        system_prompt=_text(conversation.get("system_prompt"), f"{where}.conversation.system_prompt"),
        created_at=created,
        updated_at=_parse_time(conversation.get("updated_at"), f"{where}.conversation.updated_at") or created,
        extra=_imported_settings(settings_in, conversation),
    )
    for index, entry in enumerate(messages):
        field = f"{where}.messages[{index}]"
        if not isinstance(entry, dict):
            raise ImportRejected(f"'{field}' must be an object", field=field)
        for key in ("id", "superseded_by"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ImportRejected(f"'{field}.{key}' must be a whole number or null", field=f"{field}.{key}")
        role = entry.get("role")
        if role not in ROLES:
            raise ImportRejected(f"'{field}.role' must be user, assistant or system", field=f"{field}.role")
        draft.messages.append(
            {
                "ref": entry.get("id"),
                "replaced_by": entry.get("superseded_by"),
                "role": role,
                "content": _text(entry.get("content"), f"{field}.content"),
                "reasoning": _text(entry.get("reasoning"), f"{field}.reasoning"),
                "model": _text(entry.get("model"), f"{field}.model", max_chars=100),
                "finish_reason": _text(entry.get("finish_reason"), f"{field}.finish_reason", max_chars=32),
                "created_at": _parse_time(entry.get("created_at"), f"{field}.created_at"),
                "completed_at": _parse_time(entry.get("completed_at"), f"{field}.completed_at"),
                "files": _files(entry.get("attachments"), f"{field}.attachments") if role == "user" else [],
            }
        )
    return draft


def _imported_settings(settings_in: dict, conversation: dict) -> dict:
    """Generation settings and flags from the file, kept only when they are valid for our columns."""
    extra = {}
    for name in ("temperature", "top_p"):
        value = settings_in.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            extra[name] = float(value)
    value = settings_in.get("max_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000:
        extra["max_tokens"] = value
    if isinstance(settings_in.get("json_mode"), bool):
        extra["json_mode"] = settings_in["json_mode"]
    if isinstance(settings_in.get("thinking"), bool):
        extra["thinking"] = settings_in["thinking"]
    for name in ("pinned", "archived"):
        if isinstance(conversation.get(name), bool):
            extra[name] = conversation[name]
    return extra


def _chatgpt_text(content) -> tuple[str, str]:
    """(text, reasoning) from a ChatGPT message ``content``; images and other attachments are left out."""
    if not isinstance(content, dict):
        return "", ""
    kind = content.get("content_type")
    if kind == "thoughts":
        thoughts = content.get("thoughts") or []
        parts = [t.get("content", "") for t in thoughts if isinstance(t, dict) and isinstance(t.get("content"), str)]
        return "", "\n\n".join(p for p in parts if p)
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n\n".join(p for p in parts if isinstance(p, str) and p), ""
    if isinstance(content.get("text"), str):
        return content["text"], ""
    return "", ""


def _chatgpt_thread(mapping: dict, current_node) -> list[dict]:
    """The nodes of the thread the user last saw: from ``current_node`` up to the root, then reversed.

    Without a ``current_node`` the newest leaf is used. A cycle or a dangling parent ends the walk.
    """
    if not isinstance(current_node, str) or current_node not in mapping:
        leaves = [key for key, node in mapping.items() if isinstance(node, dict) and not node.get("children")]
        current_node = max(leaves, key=lambda key: _node_time(mapping[key]), default=None)
    chain, seen, key = [], set(), current_node
    while isinstance(key, str) and key in mapping and key not in seen:
        seen.add(key)
        node = mapping[key]
        if not isinstance(node, dict):
            break
        chain.append(node)
        key = node.get("parent")
    return chain[::-1]


def _node_time(node: dict) -> float:
    message = node.get("message") if isinstance(node, dict) else None
    value = message.get("create_time") if isinstance(message, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _chatgpt_draft(entry, where: str) -> _Draft:
    if not isinstance(entry, dict) or not isinstance(entry.get("mapping"), dict):
        raise ImportRejected(f"'{where}' is not a ChatGPT conversation (no 'mapping')", field=where)
    created = _parse_time(entry.get("create_time"), f"{where}.create_time")
    draft = _Draft(
        title=_text(entry.get("title"), f"{where}.title", max_chars=200).strip(),
        model=settings.KIMI_DEFAULT_MODEL,  # ChatGPT's models are not offered here; new answers use ours
        system_prompt="",
        created_at=created,
        updated_at=_parse_time(entry.get("update_time"), f"{where}.update_time") or created,
        extra={},
    )
    reasoning = ""
    for node in _chatgpt_thread(entry["mapping"], entry.get("current_node")):
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        text, thought = _chatgpt_text(message.get("content"))
        if thought:  # o1-style reasoning comes as its own node before the answer it belongs to
            reasoning = "\n\n".join(p for p in (reasoning, thought) if p)
            continue
        if role not in ROLES or not text.strip():
            continue  # tool calls, hidden system context, empty placeholders
        metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
        model = metadata.get("model_slug") if role == Message.Role.ASSISTANT else ""
        draft.messages.append(
            {
                "ref": None,
                "replaced_by": None,
                "role": role,
                "content": text,
                "reasoning": reasoning if role == Message.Role.ASSISTANT else "",
                "model": model[:100] if isinstance(model, str) else "",
                "finish_reason": "",
                "created_at": _parse_time(message.get("create_time"), f"{where}.mapping.create_time"),
                "completed_at": None,
            }
        )
        if role == Message.Role.ASSISTANT:
            reasoning = ""
    return draft


def _documents_from_zip(data: bytes) -> list:
    """Every ``.json`` member of an uploaded ZIP, read with a running cap so a small ZIP cannot expand without end."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ImportRejected("the file is not a valid ZIP archive", code="bad_file") from None
    members = [info for info in archive.infolist() if info.filename.endswith(".json") and not info.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise ImportRejected(f"the ZIP holds more than {MAX_ZIP_MEMBERS:,} JSON files", code="too_large")
    documents, budget = [], MAX_IMPORT_BYTES
    for info in members:
        with archive.open(info) as member:
            # Read one byte past the budget: the size in the ZIP header is the uploader's claim, not a fact.
            content = member.read(budget + 1)
        budget -= len(content)
        if budget < 0:
            raise ImportRejected(f"the ZIP expands to more than {MAX_IMPORT_BYTES // 2**20} MB", code="too_large")
        documents.append(_loads(content, info.filename))
    return documents


def _loads(data: bytes, where: str):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ImportRejected(f"{where} is not valid JSON: {exc}", code="bad_json") from None


def parse_import(data: bytes) -> list[_Draft]:
    """Recognise the upload and turn it into drafts; raises ``ImportRejected`` with a message naming the problem.

    Accepted: one ``kimichat.conversation.v1`` document, a list of them, a ZIP of them (our ``all.zip``), or a
    ChatGPT ``conversations.json`` (a list of conversations with a ``mapping``).
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRejected(f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MB", code="too_large")
    if data[:4] == b"PK\x03\x04":
        documents = _documents_from_zip(data)
    else:
        parsed = _loads(data, "the file")
        documents = parsed if isinstance(parsed, list) else [parsed]
    if not documents:
        raise ImportRejected("the file holds no conversations", code="bad_import")
    if len(documents) > MAX_IMPORT_CONVERSATIONS:
        raise ImportRejected(f"the file holds more than {MAX_IMPORT_CONVERSATIONS:,} conversations", code="too_large")
    drafts = []
    for index, document in enumerate(documents):
        where = f"[{index}]"
        if isinstance(document, dict) and "mapping" in document:
            drafts.append(_chatgpt_draft(document, where))
        elif isinstance(document, dict) and "format" in document:
            drafts.append(_kimichat_draft(document, where))
        else:
            raise ImportRejected(
                f"{where} is neither a {FORMAT} document nor a ChatGPT conversation", code="bad_format", field=where
            )
    if sum(len(d.messages) for d in drafts) > MAX_IMPORT_MESSAGES:
        raise ImportRejected(f"the file holds more than {MAX_IMPORT_MESSAGES:,} messages", code="too_large")
    return drafts


def import_conversations(user, data: bytes) -> list[int]:
    """Create the file's conversations for ``user``; all of them or (on any error) none. Returns the new ids."""
    drafts = parse_import(data)
    stored: list[Attachment] = []  # files stored for this import: removed again if it fails
    try:
        return _import(user, drafts, stored)
    except BaseException:
        attachment_archive.discard(stored)
        raise


@transaction.atomic
def _import(user, drafts: list[_Draft], stored: list[Attachment]) -> list[int]:
    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        Conversation(
            owner=user,
            title=draft.title,
            model=draft.model or settings.KIMI_DEFAULT_MODEL,
            system_prompt=draft.system_prompt,
            created_at=draft.created_at or now,
            updated_at=draft.updated_at or draft.created_at or now,
            **draft.extra,
        )
        for draft in drafts
    )
    rows: list[Message] = []
    links: list[tuple[int, object, object]] = []  # (index in rows, the file's id, the file's superseded_by)
    for conversation, draft in zip(conversations, drafts, strict=True):
        for entry in draft.messages:
            created = entry["created_at"] or conversation.created_at
            links.append((len(rows), (conversation.pk, entry["ref"]), (conversation.pk, entry["replaced_by"])))
            rows.append(
                Message(
                    conversation=conversation,
                    role=entry["role"],
                    content=entry["content"],
                    reasoning=entry["reasoning"],
                    status=Message.Status.COMPLETE,
                    model=entry["model"],
                    finish_reason=entry["finish_reason"],
                    created_at=created,
                    completed_at=entry["completed_at"] or (created if entry["role"] == "assistant" else None),
                )
            )
    Message.objects.bulk_create(rows, batch_size=500)
    _link_versions(rows, links)
    entries = [entry for draft in drafts for entry in draft.messages]
    for row, entry in zip(rows, entries, strict=True):
        for name, content in entry.get("files", []):
            try:  # every file passes the upload's checks again: an import is untrusted input
                attachment = uploads.create_attachment(user, name=name, data=content)
            except AttachmentRefused as exc:
                raise ImportRejected(f"{name}: {exc.message}", code=exc.code) from None
            stored.append(attachment)
            Attachment.objects.filter(pk=attachment.pk).update(message=row)
    return [c.pk for c in conversations]


def _link_versions(rows: list[Message], links: list[tuple[int, tuple, tuple]]) -> None:
    """Point earlier versions at their new successors, using the file's ids only within the same conversation.

    A successor must come later in the file (as it does in ours, ordered by id): that rules out cycles.
    """
    position = {ref: index for index, ref, _ in links if ref[1] is not None}
    replaced = []
    for index, _, successor in links:
        later = position.get(successor) if successor[1] is not None else None
        if later is not None and later > index:
            rows[index].superseded_by_id = rows[later].pk
            replaced.append(rows[index])
    if replaced:
        Message.objects.bulk_update(replaced, ["superseded_by"], batch_size=500)
