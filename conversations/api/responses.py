"""What every JSON API view shares: the error body, query parameters, and reading a conversation as its owner."""

from __future__ import annotations

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
