"""Exporting conversations (Markdown, JSON, a ZIP of everything) and importing them back, or from ChatGPT.

The JSON format ``kimichat.conversation.v1`` is documented in docs/api.md. Imports never trust the file: ids in it
are only references between its own messages (and, with the creation time, the key that makes a second import of
the same export skip what the first stored), every row is created anew and owned by the importer, and usage and
cost are not imported (they describe charges made elsewhere; importing them would count them twice in usage reports).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.contrib.humanize.templatetags.humanize import ordinal
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.text import slugify
from django.utils.translation import gettext, gettext_lazy

from conversations.models import Attachment, Conversation, Message
from conversations.serializers import conversation_to_dict, message_to_dict
from conversations.services.attachments import archive as attachment_archive
from conversations.services.attachments import uploads
from conversations.services.attachments.limits import AttachmentRefused
from conversations.services.history import branches
from conversations.services.projects import archive as project_archive
from conversations.services.text import NulCharacter, refuse_nul

FORMAT = "kimichat.conversation.v1"
MAX_IMPORT_BYTES = 20 * 1024 * 1024  # fixed, not a setting: it bounds the memory one request can take
MAX_IMPORT_CONVERSATIONS = 10_000
MAX_IMPORT_MESSAGES = 200_000
MAX_ZIP_MEMBERS = MAX_IMPORT_CONVERSATIONS
MAX_EXPORT_BYTES = 200 * 1024 * 1024  # uncompressed; beyond it the ZIP would take too long to build in one request
EXPORT_CHUNK = 200  # conversations whose messages are read in one query
SPOOL_BYTES = 10 * 1024 * 1024  # the ZIP stays in memory up to this, then moves to a temporary file
# Messages written per import transaction: on SQLite a transaction holds the one write lock of the database, and
# this many rows take a few tens of milliseconds, so other users' sends barely wait (the whole file took 14-47 s).
STORE_BATCH_MESSAGES = 1000
IMPORT_KEY_CHARS = 200  # Conversation.import_key's max_length
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


def filename_for(conversation: Conversation, extension: str, *, ascii_only: bool = False) -> str:
    """``kimichat-<id>-<slug>.<ext>``; the slug keeps a Chinese (or any non-Latin) title unless ``ascii_only`` (the
    fallback name for clients that do not read ``filename*``)."""
    slug = slugify(conversation.title, allow_unicode=not ascii_only)[:60].strip("-") or "conversation"
    return f"kimichat-{conversation.pk}-{slug}.{extension}"


# The export keeps the API's message shape, less what only matters to a live socket or to this server's rows.
_NOT_EXPORTED = frozenset({"conversation_id", "seq", "client_msg_id", "versions"})


def _message_entry(message: Message) -> dict:
    entry = {key: value for key, value in message_to_dict(message).items() if key not in _NOT_EXPORTED}
    entry["attachments"] = attachment_archive.exported(message)  # the files inline: the export is complete
    return entry


def conversation_document(conversation: Conversation, messages: Iterable[Message]) -> dict:
    """The ``kimichat.conversation.v1`` document: every message, oldest first, the whole tree: each names the message
    it follows (``parent_id``), and those off the active branch carry ``superseded_by``."""
    data = conversation_to_dict(conversation)
    document = {
        "format": FORMAT,
        "exported_at": timezone.now().isoformat(),
        "conversation": data,
        "messages": [_message_entry(m) for m in messages],
    }
    if conversation.project_id:  # its project's name and instructions, so it can come back into one like it
        document["project"] = project_archive.entry(conversation.project)
    return document


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


def _searches_lines(searches) -> list[str]:
    """A web-search answer's searches and the sources it cited (docs/tools.md)."""
    lines = []
    for search in searches or []:
        lines += ["", f"*Web search: {search.get('query') or '?'} ({search.get('status', '')})*"]
        lines += [f"- [{source['title']}]({source['url']})" for source in search.get("sources") or []]
    return lines


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
        lines += _searches_lines(message.searches)
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
    conversations = list(Conversation.objects.for_user(user).in_history().select_related("project").order_by("id"))
    try:
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            projects = project_archive.projects_document(user)
            if projects is not None:  # every project, with its files (services/projects/archive.py)
                document = orjson.dumps(projects)
                written += len(document)
                zf.writestr(project_archive.FILENAME, document)
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
#
# Every error is a sentence for the person who uploaded the file (translated), naming the conversation and message
# it is about; ``field`` keeps the machine path into the file (``[0].messages[3].role``) for programs.


def _file_error(message: str, *, code: str = "bad_import") -> ImportRejected:
    return ImportRejected(message, code=code)


class _Place:
    """Where in the file a value is: the n-th conversation, maybe its m-th message; in words and as a path."""

    def __init__(self, conversation: int, message: int | None = None, path: str = ""):
        self.conversation = conversation
        self.message = message
        self.path = path or f"[{conversation}]"

    def at(self, message: int) -> _Place:
        return _Place(self.conversation, message, f"[{self.conversation}].messages[{message}]")

    def words(self) -> str:
        conversation = gettext("the %(nth)s conversation in the file") % {"nth": ordinal(self.conversation + 1)}
        if self.message is None:
            return conversation
        return gettext("the %(nth)s message of %(conversation)s") % {
            "nth": ordinal(self.message + 1),
            "conversation": conversation,
        }

    def reject(self, template: str, key: str = "", *, code: str = "bad_import", **values) -> ImportRejected:
        """``template`` takes %(place)s (sentence-initial capital added) and %(key)s, the name of the bad value."""
        text = template % {"place": self.words(), "key": key, **values}
        field = f"{self.path}.{key}" if key else self.path
        return ImportRejected(text[:1].upper() + text[1:], code=code, field=field)


_OUT_OF_RANGE = gettext_lazy(
    "In %(place)s, “%(key)s” is a date out of range: dates must lie between the years 1 and 9999 (UTC)."
)


def _parse_time(value, place: _Place, key: str) -> datetime | None:
    """ISO strings (our format) or Unix seconds (ChatGPT's); None when absent. Always aware, always storable."""
    if value is None or value == "":
        return None
    not_a_time = gettext(
        "In %(place)s, “%(key)s” is not a date and time (expected ISO 8601 such as 2026-04-03T10:00:00+00:00, or "
        "Unix seconds)."
    )
    parsed = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            parsed = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise place.reject(_OUT_OF_RANGE, key) from None
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None:
        raise place.reject(not_a_time, key)
    try:
        # An offset can push a valid local time outside what a datetime (and the database) holds: 0001-01-01T00:00
        # at +05:00 is in the year 0 in UTC, which used to raise OverflowError while storing (a 500).
        return parsed.astimezone(UTC) if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)
    except (OverflowError, ValueError):
        raise place.reject(_OUT_OF_RANGE, key) from None


def _text(value, place: _Place, key: str, *, max_chars: int | None = None, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise place.reject(gettext("In %(place)s, “%(key)s” must be text."), key)
    try:
        refuse_nul(value, key)
    except NulCharacter:
        raise place.reject(
            gettext("In %(place)s, “%(key)s” contains a NUL character (U+0000), which cannot be stored."), key
        ) from None
    return value[:max_chars] if max_chars else value


class _Draft:
    """A conversation to create, with its messages; ``ref``/``replaced_by`` link versions inside the file only.

    ``key`` says where it came from (``kimichat:<id>:<created_at>``, ``chatgpt:<id>``) so that importing the same
    export twice skips what the first import stored."""

    def __init__(self, *, title: str, model: str, system_prompt: str, created_at, updated_at, extra: dict, key=""):
        self.title = title
        self.model = model
        self.system_prompt = system_prompt
        self.created_at = created_at
        self.updated_at = updated_at
        self.extra = extra
        self.key = key[:IMPORT_KEY_CHARS]
        self.messages: list[dict] = []
        self.project: project_archive.ProjectSpec | None = None


def _files(value, field: str) -> list[tuple[str, bytes]]:
    try:
        return attachment_archive.parse_entries(value, field)
    except ValueError as exc:
        raise ImportRejected(str(exc), field=field) from None


def _kimichat_draft(document, place: _Place) -> _Draft:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise place.reject(
            gettext("%(place)s is not a KimiChat export (its “format” is not %(format)s)."), format=FORMAT
        )
    conversation = document.get("conversation")
    messages = document.get("messages")
    if not isinstance(conversation, dict):
        raise place.reject(gettext("In %(place)s, “%(key)s” must be an object."), "conversation")
    if not isinstance(messages, list):
        raise place.reject(gettext("In %(place)s, “%(key)s” must be a list."), "messages")
    at = _Place(place.conversation, path=f"{place.path}.conversation")
    settings_in = conversation.get("settings") or {}
    if not isinstance(settings_in, dict):
        raise at.reject(gettext("In %(place)s, “%(key)s” must be an object."), "settings")
    created = _parse_time(conversation.get("created_at"), at, "created_at")
    source_id = conversation.get("id")
    known = isinstance(source_id, int) and not isinstance(source_id, bool) and created is not None
    draft = _Draft(
        title=_text(conversation.get("title"), at, "title", max_chars=200).strip(),
        model=_text(conversation.get("model"), at, "model", max_chars=100).strip(),
        system_prompt=_text(conversation.get("system_prompt"), at, "system_prompt"),
        created_at=created,
        updated_at=_parse_time(conversation.get("updated_at"), at, "updated_at") or created,
        extra=_imported_settings(settings_in, conversation),
        key=f"kimichat:{source_id}:{created.isoformat()}" if known else "",
    )
    try:
        draft.project = project_archive.parse(document.get("project"), f"{place.path}.project")
    except project_archive.BadProject as exc:
        raise ImportRejected(str(exc), field=exc.field) from None
    for index, entry in enumerate(messages):
        here = place.at(index)
        if not isinstance(entry, dict):
            raise here.reject(gettext("%(place)s is not an object."))
        for key in ("id", "superseded_by", "parent_id"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise here.reject(gettext("In %(place)s, “%(key)s” must be a whole number or null."), key)
        role = entry.get("role")
        if role not in ROLES:
            raise here.reject(gettext("In %(place)s, “%(key)s” must be user, assistant or system."), "role")
        draft.messages.append(
            {
                "ref": entry.get("id"),
                "replaced_by": entry.get("superseded_by"),
                **({"parent_ref": entry["parent_id"]} if "parent_id" in entry else {}),  # absent: before branches
                "role": role,
                "content": _text(entry.get("content"), here, "content"),
                "reasoning": _text(entry.get("reasoning"), here, "reasoning"),
                "model": _text(entry.get("model"), here, "model", max_chars=100),
                "finish_reason": _text(entry.get("finish_reason"), here, "finish_reason", max_chars=32),
                "created_at": _parse_time(entry.get("created_at"), here, "created_at"),
                "completed_at": _parse_time(entry.get("completed_at"), here, "completed_at"),
                "files": _files(entry.get("attachments"), f"{here.path}.attachments") if role == "user" else [],
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


def _chatgpt_draft(entry: dict, place: _Place) -> _Draft:
    if not isinstance(entry.get("mapping"), dict):
        raise place.reject(gettext("%(place)s looks like a ChatGPT export, but its “mapping” is not an object."))
    created = _parse_time(entry.get("create_time"), place, "create_time")
    source_id = entry.get("conversation_id") or entry.get("id")
    draft = _Draft(
        title=_text(entry.get("title"), place, "title", max_chars=200).strip(),
        model="",  # the model of its last answer, below
        system_prompt="",
        created_at=created,
        updated_at=_parse_time(entry.get("update_time"), place, "update_time") or created,
        extra={},
        key=f"chatgpt:{source_id}" if isinstance(source_id, str) and source_id else "",
    )
    reasoning = ""
    for node in _chatgpt_thread(entry["mapping"], entry.get("current_node")):
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        here = place.at(len(draft.messages))
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        text, thought = _chatgpt_text(message.get("content"))
        if thought:  # o1-style reasoning comes as its own node before the answer it belongs to
            reasoning = "\n\n".join(p for p in (reasoning, _text(thought, here, "reasoning")) if p)
            continue
        if role not in ROLES or not text.strip():
            continue  # tool calls, hidden system context, empty placeholders
        metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
        model = metadata.get("model_slug") if role == Message.Role.ASSISTANT else ""
        model = _text(model, here, "model", max_chars=100) if isinstance(model, str) else ""
        draft.messages.append(
            {
                "ref": None,
                "replaced_by": None,
                "role": role,
                "content": _text(text, here, "content"),
                "reasoning": reasoning if role == Message.Role.ASSISTANT else "",
                "model": model,
                "finish_reason": "",
                "created_at": _parse_time(message.get("create_time"), here, "create_time"),
                "completed_at": None,
            }
        )
        if role == Message.Role.ASSISTANT:
            reasoning = ""
            # The conversation keeps the model its answers came from (gpt-4o, …), as its messages say.
            draft.model = model or draft.model
    return draft


def _draft(document, place: _Place) -> _Draft:
    if isinstance(document, dict) and "mapping" in document:
        return _chatgpt_draft(document, place)
    if isinstance(document, dict) and "format" in document:
        return _kimichat_draft(document, place)
    raise place.reject(gettext("%(place)s is neither a KimiChat export nor a ChatGPT export."), code="bad_format")


def _loads(data: bytes, member: str | None = None):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if member is None:
            text = gettext("The file is not valid JSON (%(detail)s).") % {"detail": exc}
        else:
            text = gettext("The file “%(name)s” in the ZIP archive is not valid JSON (%(detail)s).") % {
                "name": member[:100],
                "detail": exc,
            }
        raise _file_error(text, code="bad_json") from None


def _too_large(template: str, **values) -> ImportRejected:
    return _file_error(template % values, code="too_large")


def _documents_from_zip(data: bytes) -> Iterator:
    """Every ``.json`` member of an uploaded ZIP, parsed one at a time (only one member's JSON is in memory at
    once), read with a running cap so a small ZIP cannot expand without end."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise _file_error(gettext("The file is not a valid ZIP archive."), code="bad_file") from None
    members = [info for info in archive.infolist() if info.filename.endswith(".json") and not info.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise _too_large(gettext("The ZIP archive holds more than %(count)s JSON files."), count=f"{MAX_ZIP_MEMBERS:,}")
    budget = MAX_IMPORT_BYTES
    for info in members:
        try:
            with archive.open(info) as member:
                # Read one byte past the budget: the size in the ZIP header is the uploader's claim, not a fact.
                content = member.read(budget + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
            raise _file_error(
                gettext("The file “%(name)s” in the ZIP archive cannot be read.") % {"name": info.filename[:100]},
                code="bad_file",
            ) from None
        budget -= len(content)
        if budget < 0:
            raise _too_large(gettext("The ZIP archive expands to more than %(mb)s MB."), mb=MAX_IMPORT_BYTES // 2**20)
        yield _loads(content, info.filename)


def _documents(data: bytes) -> Iterator:
    if data[:4] == b"PK\x03\x04":
        yield from _documents_from_zip(data)
        return
    parsed = _loads(data)
    if not isinstance(parsed, list):
        yield parsed
        return
    if len(parsed) > MAX_IMPORT_CONVERSATIONS:
        raise _too_large(
            gettext("The file holds more than %(count)s conversations."), count=f"{MAX_IMPORT_CONVERSATIONS:,}"
        )
    for index in range(len(parsed)):
        # Handed over and dropped one by one: a document's parsed JSON is freed once it became a draft.
        document, parsed[index] = parsed[index], None
        yield document


def parse_import(data: bytes) -> list[_Draft]:
    return _parse(data)[0]


def _parse(data: bytes) -> tuple[list[_Draft], list[project_archive.ProjectSpec]]:
    """Recognise the upload and turn it into drafts; raises ``ImportRejected`` with a message naming the problem.

    Accepted: one ``kimichat.conversation.v1`` document, a list of them, a ZIP of them (our ``all.zip``), or a
    ChatGPT ``conversations.json`` (a list of conversations with a ``mapping``). The whole file is checked before
    anything is stored.
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise _too_large(gettext("The file is larger than %(mb)s MB."), mb=MAX_IMPORT_BYTES // 2**20)
    drafts, messages, projects = [], 0, []
    for index, document in enumerate(_documents(data)):
        if project_archive.is_projects_document(document):  # the ZIP's projects.json
            try:
                projects += project_archive.parse_document(document)
            except project_archive.BadProject as exc:
                raise ImportRejected(str(exc), field=exc.field) from None
            continue
        if index >= MAX_IMPORT_CONVERSATIONS:
            raise _too_large(
                gettext("The file holds more than %(count)s conversations."), count=f"{MAX_IMPORT_CONVERSATIONS:,}"
            )
        draft = _draft(document, _Place(index))
        messages += len(draft.messages)
        if messages > MAX_IMPORT_MESSAGES:
            raise _too_large(gettext("The file holds more than %(count)s messages."), count=f"{MAX_IMPORT_MESSAGES:,}")
        drafts.append(draft)
    if not drafts and not projects:
        raise _file_error(gettext("The file holds no conversations."))
    return drafts, projects


# --- storing an import ------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    imported: list[int] = field(default_factory=list)  # ids of the conversations created
    skipped: list[int] = field(default_factory=list)  # ids of the conversations that were already here


def import_conversations(user, data: bytes) -> ImportResult:
    """Store the file's conversations for ``user``, skipping those an earlier import (or this server) already holds.

    The whole file is checked first; then it is written ``STORE_BATCH_MESSAGES`` messages per transaction, so on
    SQLite other users' writes wait at most one short batch, never the whole import. Each conversation is stored
    whole or not at all; if the import stops half-way, importing the same file again stores the rest.
    """
    drafts, projects = _parse(data)
    result = ImportResult()
    _file_under_projects(user, drafts, projects)
    already = _already_here(user, drafts)
    batch: list[_Draft] = []
    size = 0
    for draft in drafts:
        existing = already.get(draft.key)
        if existing is not None:
            result.skipped.append(existing)
            continue
        if len(draft.messages) > STORE_BATCH_MESSAGES:
            _store_one_in_chunks(user, draft, result)
            continue
        if batch and size + len(draft.messages) > STORE_BATCH_MESSAGES:
            _store_batch(user, batch, result)
            batch, size = [], 0
        batch.append(draft)
        size += len(draft.messages)
    if batch:
        _store_batch(user, batch, result)
    return result


def _file_under_projects(user, drafts: list[_Draft], projects: list) -> None:
    """Find or create the file's projects (before any conversation: they are linked as they are stored)."""
    mentioned = [d for d in drafts if d.project is not None]
    try:
        ids = project_archive.store(user, projects + [d.project for d in mentioned])
    except AttachmentRefused as exc:
        raise ImportRejected(exc.message, code=exc.code) from None
    for draft, project_id in zip(mentioned, ids[len(projects) :], strict=True):
        draft.extra["project_id"] = project_id


def _already_here(user, drafts: list[_Draft]) -> dict[str, int]:
    """The file's keys that an earlier import of the user stored → the id of that conversation."""
    found: dict[str, int] = {}
    keys = [d.key for d in drafts if d.key]
    mine = Conversation.objects.for_user(user)
    for start in range(0, len(keys), 500):
        found.update(mine.filter(import_key__in=keys[start : start + 500]).values_list("import_key", "id"))
    return found


def _conversation_row(user, draft: _Draft, now, *, key: str) -> Conversation:
    return Conversation(
        owner=user,
        title=draft.title,
        model=draft.model or settings.KIMI_DEFAULT_MODEL,
        system_prompt=draft.system_prompt,
        created_at=draft.created_at or now,
        updated_at=draft.updated_at or draft.created_at or now,
        import_key=key,
        **draft.extra,
    )


def _message_rows(conversation: Conversation, entries: list[dict]) -> list[Message]:
    rows = []
    for entry in entries:
        created = entry["created_at"] or conversation.created_at
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
    return rows


def _attach_files(user, rows: list[Message], entries: list[dict], stored: list[Attachment]) -> None:
    """The files of imported user messages, each checked again as an upload is (an import is untrusted input)."""
    for row, entry in zip(rows, entries, strict=True):
        for name, content in entry.get("files", []):
            try:
                attachment = uploads.create_attachment(user, name=name, data=content)
            except AttachmentRefused as exc:
                raise ImportRejected(f"{name}: {exc.message}", code=exc.code) from None
            stored.append(attachment)
            Attachment.objects.filter(pk=attachment.pk).update(message=row)


def _store_batch(user, drafts: list[_Draft], result: ImportResult) -> None:
    """Several small conversations in one transaction; if one of them was stored meanwhile by a concurrent import of
    the same file (the unique import key), each is retried on its own. Files stored for a batch that fails are
    removed again (storage is not transactional)."""
    stored: list[Attachment] = []
    try:
        with transaction.atomic():
            now = timezone.now()
            conversations = Conversation.objects.bulk_create(
                _conversation_row(user, draft, now, key=draft.key) for draft in drafts
            )
            for conversation, draft in zip(conversations, drafts, strict=True):
                rows = _message_rows(conversation, draft.messages)
                Message.objects.bulk_create(rows, batch_size=500)
                _link_tree([row.pk for row in rows], draft.messages)
                _attach_files(user, rows, draft.messages, stored)
    except IntegrityError:
        attachment_archive.discard(stored)
        if len(drafts) == 1:
            existing = Conversation.objects.for_user(user).filter(import_key=drafts[0].key).first()
            if existing is None:
                raise
            result.skipped.append(existing.pk)
            return
        for draft in drafts:
            _store_batch(user, [draft], result)
        return
    except BaseException:
        attachment_archive.discard(stored)
        raise
    result.imported += [c.pk for c in conversations]


def _store_one_in_chunks(user, draft: _Draft, result: ImportResult) -> None:
    """A conversation too large for one short transaction: its messages go in ``STORE_BATCH_MESSAGES`` per
    transaction. It carries its import key only from the last one on, and is deleted if a later chunk fails."""
    conversation = Conversation.objects.bulk_create([_conversation_row(user, draft, timezone.now(), key="")])[0]
    stored: list[Attachment] = []
    try:
        ids: list[int] = []  # only the ids are kept across chunks, not the rows
        for start in range(0, len(draft.messages), STORE_BATCH_MESSAGES):
            entries = draft.messages[start : start + STORE_BATCH_MESSAGES]
            chunk = _message_rows(conversation, entries)
            with transaction.atomic():
                Message.objects.bulk_create(chunk, batch_size=500)
                _attach_files(user, chunk, entries, stored)
            ids += [row.pk for row in chunk]
        with transaction.atomic():
            _link_tree(ids, draft.messages)
            if draft.key:
                conversation.import_key = draft.key
                conversation.save(update_fields=["import_key"])
    except IntegrityError:  # a concurrent import of the same file stored it first
        conversation.delete()
        attachment_archive.discard(stored)
        existing = Conversation.objects.for_user(user).filter(import_key=draft.key).first()
        if existing is None:
            raise
        result.skipped.append(existing.pk)
        return
    except BaseException:
        conversation.delete()
        attachment_archive.discard(stored)
        raise
    result.imported.append(conversation.pk)


def _link_tree(ids: list[int], entries: list[dict]) -> None:
    """Rebuild the tree and its active branch with the new ids, using the file's ids only within the same
    conversation. A file with ``parent_id`` (branches) keeps its tree, a parent always earlier in the file (which
    rules out cycles; an unknown one makes the message follow the one before it). A file without (an older export, a
    ChatGPT thread) is one thread in which an earlier version sits beside the one that replaced it, as migration
    0014 linked stored threads. The active branch is the path to the newest message not marked as replaced; every
    other message is marked off it."""
    if not entries:
        return
    position = {entry["ref"]: index for index, entry in enumerate(entries) if entry["ref"] is not None}
    replaced = [position.get(entry["replaced_by"]) if entry["replaced_by"] is not None else None for entry in entries]
    if any("parent_ref" in entry for entry in entries):
        parents = []
        for index, entry in enumerate(entries):
            ref = entry.get("parent_ref", False)  # False: this entry names no parent
            found = position.get(ref) if ref is not None and ref is not False else None
            if ref is not None and (found is None or found >= index):
                found = index - 1 if index else None
            parents.append(found)
    else:
        replaced = [r if r is not None and r > index else None for index, r in enumerate(replaced)]  # come later
        linked = branches.link_parents([(index, entry["role"], replaced[index]) for index, entry in enumerate(entries)])
        parents = [linked[index] for index in range(len(entries))]
    shown = [index for index, r in enumerate(replaced) if r is None]
    leaf = shown[-1] if shown else len(entries) - 1
    path, node = set(), leaf
    while node is not None and node not in path:
        path.add(node)
        node = parents[node]
    rows = [
        Message(
            pk=ids[index],
            parent_id=ids[parents[index]] if parents[index] is not None else None,
            superseded_by_id=None if index in path else ids[replaced[index] if replaced[index] is not None else leaf],
        )
        for index in range(len(entries))
    ]
    Message.objects.bulk_update(rows, ["parent", "superseded_by"], batch_size=500)
