"""What every JSON API view shares: the error body, query parameters, and reading a conversation as its owner."""

from __future__ import annotations

import orjson
from django.http import HttpResponse, JsonResponse
from django.utils.http import content_disposition_header

from conversations.models import Conversation, Project

NOT_FOUND_MESSAGE = "No such conversation."


def error(code: str, message: str, status: int, *, field: str | None = None, **extra) -> JsonResponse:
    body = {"code": code, "message": message, **extra}
    if field:
        body["field"] = field
    return JsonResponse({"error": body}, status=status)


def not_found(message: str = NOT_FOUND_MESSAGE) -> JsonResponse:
    return error("not_found", message, 404)


def method_not_allowed(request, allow: str) -> JsonResponse:
    response = error("method_not_allowed", f"{request.method} is not allowed here.", 405)
    response["Allow"] = allow
    return response


JSON_BODY_BYTES = 64 * 1024  # 20,000 characters of instructions in JSON escapes fit with room to spare


def json_body(request, max_bytes: int = JSON_BODY_BYTES):
    """The JSON body and None, or None and the error response to return."""
    if request.content_type != "application/json":
        # A form body has been read by the CSRF check already, and is not what these routes take anyway.
        return None, error("bad_json", "the body must be JSON (Content-Type: application/json)", 400)
    if len(request.body) > max_bytes:
        return None, error("too_large", f"the body must be at most {max_bytes // 1024} KB", 413)
    try:
        return orjson.loads(request.body), None
    except orjson.JSONDecodeError as exc:
        return None, error("bad_json", f"the body is not valid JSON: {exc}", 400)


def own_conversation(request, conversation_id: int) -> Conversation | None:
    """The one ownership check of the API: another user's id is answered exactly like a missing one."""
    return Conversation.objects.for_user(request.user).filter(pk=conversation_id).first()


def own_project(request, project_id: int) -> Project | None:
    """The same check for projects: another user's project is a missing one."""
    return Project.objects.for_user(request.user).filter(pk=project_id).first()


def temporary_refused(action: str) -> JsonResponse:
    """A history action (share, export) asked of a temporary chat, which is never kept."""
    return error("temporary_chat", f"This is a temporary chat: it is not kept, so it cannot be {action}.", 409)


def as_attachment(response: HttpResponse, filename: str, ascii_filename: str | None = None) -> HttpResponse:
    """``filename*`` (RFC 6266/5987) carries a Unicode name; ``ascii_filename`` is the plain ``filename`` for old
    clients that ignore it."""
    header = content_disposition_header(True, filename)
    if ascii_filename and ascii_filename != filename:
        header = f'attachment; filename="{ascii_filename}"; ' + header.removeprefix("attachment; ")
    response["Content-Disposition"] = header
    return response


def int_param(request, name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"'{name}' must be a whole number, got {raw[:40]!r}") from None
    if not minimum <= value <= maximum:
        raise ValueError(f"'{name}' must be between {minimum} and {maximum}, got {value}")
    return value


def bool_param(request, name: str) -> bool | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if raw in {"1", "true"}:
        return True
    if raw in {"0", "false"}:
        return False
    raise ValueError(f"'{name}' must be 1/true or 0/false, got {raw[:40]!r}")


def project_param(request) -> int | str | None:
    """``?project=<id>`` or ``?project=none`` (the chats out of any project); None when absent."""
    raw = request.GET.get("project")
    if raw is None or raw == "":
        return None
    if raw == "none":
        return "none"
    if not raw.isdigit() or not 1 <= int(raw) <= 2**63 - 1:
        raise ValueError(f"'project' must be a project id or none, got {raw[:40]!r}")
    return int(raw)
