"""/api/attachments/: upload (multipart ``file``, optional ``model``), list the unsent ones, one attachment's
metadata, its file (owner only, as a download), deletion, and the estimate of a message with its attachments.

Thin: the checks and the storing are in ``services/attachments``; another user's id is answered like a missing one.
"""

from __future__ import annotations

import orjson
from django.http import FileResponse, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from conversations.api.responses import as_attachment, error
from conversations.models import Attachment
from conversations.serializers import attachment_to_dict
from conversations.services.attachments import estimate as estimates
from conversations.services.attachments import limits, storage, uploads
from conversations.services.attachments.limits import AttachmentRefused

MAX_ESTIMATE_BYTES = 512 * 1024  # a 100,000-character message in JSON escapes, and the ids


def _not_found() -> JsonResponse:
    return error("not_found", _("No such attachment."), 404)


def _refused(exc: AttachmentRefused) -> JsonResponse:
    return error(exc.code, exc.message, exc.status, **exc.extra)


def _own(request, attachment_id: int) -> Attachment | None:
    return Attachment.objects.for_user(request.user).filter(pk=attachment_id).first()


def attachment_list(request):
    if request.method == "POST":
        return _upload(request)
    if request.method == "GET":
        unsent = Attachment.objects.for_user(request.user).unsent()
        return JsonResponse({"results": [attachment_to_dict(a) for a in unsent]})
    response = error("method_not_allowed", f"{request.method} is not allowed here.", 405)
    response["Allow"] = "GET, POST"
    return response


def _upload(request):
    # Refused before the body is read when the client says it is too large (the upload handlers would spool it).
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > limits.max_bytes() + 64 * 1024:
        return _refused_size(declared)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return error("bad_parameter", _("Send the file as the multipart field 'file'."), 400, field="file")
    if uploaded.size > limits.max_bytes():
        return _refused_size(uploaded.size)
    model = (request.POST.get("model") or "").strip()[:100] or None
    try:
        attachment = uploads.create_attachment(request.user, name=uploaded.name, data=uploaded.read(), model=model)
    except AttachmentRefused as exc:
        return _refused(exc)
    return JsonResponse(attachment_to_dict(attachment), status=201)


def _refused_size(size: int) -> JsonResponse:
    try:
        uploads.check_size(size)
    except AttachmentRefused as exc:
        return _refused(exc)
    raise AssertionError("only called for a size over the limit")  # pragma: no cover


def attachment_resource(request, attachment_id: int):
    attachment = _own(request, attachment_id)
    if attachment is None:
        return _not_found()
    if request.method == "GET":
        return JsonResponse(attachment_to_dict(attachment))
    if request.method == "DELETE":
        try:
            uploads.delete_unsent(attachment)
        except AttachmentRefused as exc:
            return _refused(exc)
        return HttpResponse(status=204)
    response = error("method_not_allowed", f"{request.method} is not allowed here.", 405)
    response["Allow"] = "GET, DELETE"
    return response


@require_GET
def attachment_file(request, attachment_id: int):
    """The stored file, always as a download (never rendered inline: an HTML or SVG file cannot run as our page)."""
    attachment = _own(request, attachment_id)
    if attachment is None:
        return _not_found()
    response = FileResponse(storage.open_blob(attachment.storage_key), content_type=attachment.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return as_attachment(response, attachment.name)


@require_POST
def estimate(request):
    """``{"model", "content", "attachments": [ids], "conversation_id"?}`` → tokens, whether it fits, the most it may
    cost (as the reservation will count it)."""
    if request.content_type != "application/json":
        # A form body has been read by the CSRF check already, and is not what this takes anyway.
        return error("bad_json", "the body must be JSON (Content-Type: application/json)", 400)
    if len(request.body) > MAX_ESTIMATE_BYTES:
        return error("too_large", f"the body must be at most {MAX_ESTIMATE_BYTES // 1024} KB", 413)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return error("bad_json", f"the body is not valid JSON: {exc}", 400)
    try:
        result = estimates.estimate_message(request.user, body)
    except AttachmentRefused as exc:
        return _refused(exc)
    return JsonResponse(result)
