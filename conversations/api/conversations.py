"""/api/conversations/: the list (keyset pages), and one conversation: GET with its messages, PATCH, DELETE.

Session auth, CSRF on writes, everything read through ``for_user`` (``responses.own_conversation``).
"""

from __future__ import annotations

import orjson
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from conversations.api.pagination import BadCursor, after_cursor, encode_cursor
from conversations.api.responses import (
    bool_param,
    error,
    int_param,
    not_found,
    own_conversation,
    own_project,
    project_param,
)
from conversations.models import Conversation, Message
from conversations.serializers import conversation_to_dict, message_to_dict
from conversations.services.history import branches
from conversations.services.history import changes as history
from conversations.services.projects.membership import ProjectNotFound

MAX_LIMIT = 100
MAX_PATCH_BYTES = 64 * 1024  # a 20,000-character system prompt in JSON escapes fits with room to spare


@require_GET
def conversation_list(request):
    """Newest first, ``limit`` per page (default 30, at most 100), ``next`` is the cursor of the next page."""
    try:
        limit = int_param(request, "limit", 30, minimum=1, maximum=MAX_LIMIT)
        archived = bool_param(request, "archived")
        pinned = bool_param(request, "pinned")
        project = project_param(request)
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400)
    conversations = Conversation.objects.for_user(request.user).in_history().filter(archived=bool(archived))
    if pinned is not None:
        conversations = conversations.filter(pinned=pinned)
    if isinstance(project, int) and own_project(request, project) is None:
        return error("not_found", _("No such project."), 404, field="project")
    if project is not None:  # "none": the chats out of any project
        conversations = conversations.filter(project_id=None if project == "none" else project)
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


def conversation_resource(request, conversation_id: int):
    """GET, PATCH and DELETE on one URL."""
    if request.method == "GET":
        return _detail(request, conversation_id)
    if request.method == "PATCH":
        return _update(request, conversation_id)
    if request.method == "DELETE":
        return _delete(request, conversation_id)
    response = error("method_not_allowed", f"{request.method} is not allowed here.", 405)
    response["Allow"] = "GET, PATCH, DELETE"
    return response


def _detail(request, conversation_id: int):
    """The conversation and its latest ``limit`` messages (default 50); ``before=<message id>`` pages back."""
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    try:
        limit = int_param(request, "limit", 50, minimum=1, maximum=500)
        before = int_param(request, "before", None, minimum=1, maximum=2**63 - 1)
        include_versions = bool_param(request, "versions")
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400)
    return JsonResponse(
        conversation_with_messages(conversation, limit=limit, before=before, all_branches=include_versions)
    )


def conversation_with_messages(
    conversation: Conversation, *, limit: int, before: int | None, all_branches: bool
) -> dict:
    """The conversation and a page of its active branch (or of every message), each message with its versions.
    Three queries, whatever the number of branches: the page, its attachments, the versions of its messages."""
    messages = Message.objects.filter(conversation=conversation)
    if not all_branches:
        messages = messages.current()
    if before is not None:
        messages = messages.filter(id__lt=before)
    page = list(messages.order_by("-id").select_related("feedback").prefetch_related("attachments")[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit][::-1]
    versions = branches.versions_of(conversation.pk, page)
    data = conversation_to_dict(conversation)
    data["messages"] = [message_to_dict(m, versions.get(m.pk)) for m in page]
    data["has_more"] = has_more
    return data


def _update(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    if len(request.body) > MAX_PATCH_BYTES:
        return error("too_large", f"the body must be at most {MAX_PATCH_BYTES // 1024} KB", 413)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return error("bad_json", f"the body is not valid JSON: {exc}", 400)
    try:
        history.update_conversation(conversation, body)
    except history.SettingsDoNotFit as exc:
        return error("settings_not_supported", str(exc), 400, field=exc.field, settings=exc.settings)
    except history.InvalidChange as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    except ProjectNotFound:
        return error("not_found", _("No such project."), 404, field="project")
    return JsonResponse(conversation_to_dict(conversation))


def _delete(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    try:
        history.delete_conversation(conversation)
    except history.ConversationBusy:
        return error("busy", "An answer is still being written in this conversation; stop it first.", 409)
    return HttpResponse(status=204)
