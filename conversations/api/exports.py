"""Export (Markdown, JSON, a zip of everything) and import of the user's conversations."""

from __future__ import annotations

from django.http import FileResponse, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from conversations.api.responses import as_attachment, error, not_found, own_conversation
from conversations.services.history import exports


@require_GET
def export_markdown(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    response = HttpResponse(exports.export_markdown(conversation), content_type="text/markdown; charset=utf-8")
    return as_attachment(response, exports.filename_for(conversation, "md"))


@require_GET
def export_json(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    response = HttpResponse(exports.export_json(conversation), content_type="application/json")
    return as_attachment(response, exports.filename_for(conversation, "json"))


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
