"""The JSON API under /api/: session auth, CSRF on writes, everything scoped to the requesting user."""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from conversations.models import Conversation, Message
from conversations.pagination import BadCursor, after_cursor, encode_cursor
from conversations.serializers import conversation_to_dict, message_to_dict

MAX_LIMIT = 100


def error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _int_param(request, name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
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


def _bool_param(request, name: str) -> bool | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if raw in {"1", "true"}:
        return True
    if raw in {"0", "false"}:
        return False
    raise ValueError(f"'{name}' must be 1/true or 0/false, got {raw[:40]!r}")


@require_GET
def me(request):
    user = request.user
    account = getattr(user, "credit_account", None)
    return JsonResponse(
        {
            "id": user.pk,
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "balance": str(account.balance) if account is not None else None,
        }
    )


@require_GET
def conversation_list(request):
    """Newest first, ``limit`` per page (default 30, at most 100), ``next`` is the cursor of the next page."""
    try:
        limit = _int_param(request, "limit", 30, minimum=1, maximum=MAX_LIMIT)
        archived = _bool_param(request, "archived")
        pinned = _bool_param(request, "pinned")
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400)
    conversations = Conversation.objects.for_user(request.user).filter(archived=bool(archived))
    if pinned is not None:
        conversations = conversations.filter(pinned=pinned)
    cursor = request.GET.get("cursor")
    if cursor:
        try:
            conversations = conversations.filter(after_cursor(cursor))
        except BadCursor as exc:
            return error("bad_parameter", f"'cursor': {exc}", 400)
    page = list(conversations.order_by("-updated_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return JsonResponse(
        {
            "results": [conversation_to_dict(c) for c in page],
            "next": encode_cursor(page[-1].updated_at, page[-1].pk) if more else None,
        }
    )


@require_GET
def conversation_detail(request, conversation_id: int):
    """The conversation and its latest ``limit`` messages (default 50); ``before=<message id>`` pages back."""
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), pk=conversation_id)
    try:
        limit = _int_param(request, "limit", 50, minimum=1, maximum=500)
        before = _int_param(request, "before", None, minimum=1, maximum=2**63 - 1)
        include_versions = _bool_param(request, "versions")
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400)
    messages = Message.objects.filter(conversation=conversation)
    if not include_versions:
        messages = messages.current()
    if before is not None:
        messages = messages.filter(id__lt=before)
    page = list(messages.order_by("-id")[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit][::-1]
    data = conversation_to_dict(conversation)
    data["messages"] = [message_to_dict(m) for m in page]
    data["has_more"] = has_more
    return JsonResponse(data)
