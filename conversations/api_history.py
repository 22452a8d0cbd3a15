"""JSON API for past conversations: change, delete, search, export/import, share links. Thin: logic is in services.

Every conversation is read through ``for_user``; another user's id is answered exactly like a missing one (404).
Writes are session-authenticated and CSRF-checked by Django's middleware (the browser sends X-CSRFToken).
"""

from __future__ import annotations

import orjson
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import api
from conversations.models import Conversation
from conversations.serializers import conversation_to_dict
from conversations.services import exports, history, search, shares

NOT_FOUND_MESSAGE = "No such conversation."
MAX_PATCH_BYTES = 64 * 1024  # a 20,000-character system prompt in JSON escapes fits with room to spare


def error(code: str, message: str, status: int, *, field: str | None = None, **extra) -> JsonResponse:
    body = {"code": code, "message": message, **extra}
    if field:
        body["field"] = field
    return JsonResponse({"error": body}, status=status)


def _not_found(message: str = NOT_FOUND_MESSAGE) -> JsonResponse:
    return error("not_found", message, 404)


def _own_conversation(request, conversation_id: int) -> Conversation | None:
    return Conversation.objects.for_user(request.user).filter(pk=conversation_id).first()


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


# --- /api/conversations/<id>/ ------------------------------------------------------------------------------


def conversation_resource(request, conversation_id: int):
    """GET (conversations.api.conversation_detail), PATCH and DELETE on one URL."""
    if request.method == "GET":
        try:
            return api.conversation_detail(request, conversation_id)
        except Http404:
            return _not_found()
    if request.method == "PATCH":
        return _update(request, conversation_id)
    if request.method == "DELETE":
        return _delete(request, conversation_id)
    response = error("method_not_allowed", f"{request.method} is not allowed here.", 405)
    response["Allow"] = "GET, PATCH, DELETE"
    return response


def _update(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    if len(request.body) > MAX_PATCH_BYTES:
        return error("too_large", f"the body must be at most {MAX_PATCH_BYTES // 1024} KB", 413)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return error("bad_json", f"the body is not valid JSON: {exc}", 400)
    try:
        history.update_conversation(conversation, body)
    except history.InvalidChange as exc:
        return error("bad_parameter", str(exc), 400, field=exc.field or None)
    return JsonResponse(conversation_to_dict(conversation))


def _delete(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    try:
        history.delete_conversation(conversation)
    except history.ConversationBusy:
        return error("busy", "An answer is still being written in this conversation; stop it first.", 409)
    return HttpResponse(status=204)


# --- search ---------------------------------------------------------------------------------------------------


@require_GET
def search_view(request):
    try:
        limit = api._int_param(request, "limit", 20, minimum=1, maximum=search.MAX_LIMIT)
    except ValueError as exc:
        return error("bad_parameter", str(exc), 400, field="limit")
    try:
        results = search.search(request.user, request.GET.get("q", ""), limit=limit)
    except search.SearchQueryError as exc:
        return error("bad_parameter", str(exc), 400, field="q")
    return JsonResponse({"results": results})


# --- export / import ------------------------------------------------------------------------------------------


@require_GET
def export_markdown(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    response = HttpResponse(exports.export_markdown(conversation), content_type="text/markdown; charset=utf-8")
    return _attachment(response, exports.filename_for(conversation, "md"))


@require_GET
def export_json(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    response = HttpResponse(exports.export_json(conversation), content_type="application/json")
    return _attachment(response, exports.filename_for(conversation, "json"))


@require_GET
def export_all(request):
    try:
        archive = exports.export_all_zip(request.user)
    except exports.ExportTooLarge:
        return error(
            "too_large",
            "Your history is too large for one archive; export conversations one at a time instead.",
            413,
        )
    return FileResponse(archive, as_attachment=True, filename="kimichat-conversations.zip")


@require_POST
def import_view(request):
    # Refuse an oversized upload before Django reads (and spools) it.
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > exports.MAX_IMPORT_BYTES + 64 * 1024:
        return error("too_large", f"the file is larger than {exports.MAX_IMPORT_BYTES // 2**20} MB", 413)
    upload = request.FILES.get("file")
    if upload is None:
        return error("bad_parameter", "send the file as the multipart field 'file'", 400, field="file")
    if upload.size > exports.MAX_IMPORT_BYTES:
        return error("too_large", f"the file is larger than {exports.MAX_IMPORT_BYTES // 2**20} MB", 413)
    try:
        ids = exports.import_conversations(request.user, upload.read())
    except exports.ImportRejected as exc:
        status = 413 if exc.code == "too_large" else 400
        return error(exc.code, str(exc), status, field=exc.field)
    return JsonResponse({"imported": len(ids), "conversation_ids": ids}, status=201)


# --- share links ----------------------------------------------------------------------------------------------


@require_POST
def share_create(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    try:
        link = shares.create_share(conversation)
    except shares.NothingToShare:
        return error("empty_conversation", "There is nothing to share yet.", 409)
    return JsonResponse(shares.share_to_dict(link), status=201)


@require_GET
def share_list(request, conversation_id: int):
    conversation = _own_conversation(request, conversation_id)
    if conversation is None:
        return _not_found()
    return JsonResponse({"results": [shares.share_to_dict(link) for link in shares.active_shares(conversation)]})


@require_http_methods(["DELETE"])
def share_revoke(request, token: str):
    if not shares.revoke_share(request.user, token):
        return _not_found("No such share link.")
    return HttpResponse(status=204)
