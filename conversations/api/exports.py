"""Export (Markdown, JSON, a zip of everything) and import of the user's conversations."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.http import FileResponse, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from conversations.api.responses import as_attachment, error, not_found, own_conversation, temporary_refused
from conversations.services.history import exports, import_limits


@require_GET
def export_markdown(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    if conversation.temporary:
        return temporary_refused("exported")
    response = HttpResponse(exports.export_markdown(conversation), content_type="text/markdown; charset=utf-8")
    return as_attachment(
        response, exports.filename_for(conversation, "md"), exports.filename_for(conversation, "md", ascii_only=True)
    )


@require_GET
def export_json(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    if conversation.temporary:
        return temporary_refused("exported")
    response = HttpResponse(exports.export_json(conversation), content_type="application/json")
    return as_attachment(
        response,
        exports.filename_for(conversation, "json"),
        exports.filename_for(conversation, "json", ascii_only=True),
    )


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
async def import_view(request):
    """Runs in a thread of its own, not the one every sync view and socket database call of the process shares:
    parsing and writing a 20 MB file takes seconds, and the process's other users must not wait for it. Unless the
    request is already inside a transaction (ATOMIC_REQUESTS, or a test's): the import must then use its connection,
    or it would not see that transaction's rows."""
    if await sync_to_async(_in_transaction)():
        return await sync_to_async(_import)(request)
    return await sync_to_async(_import_in_own_thread, thread_sensitive=False)(request)


def _in_transaction() -> bool:
    return connection.in_atomic_block


def _import_in_own_thread(request):
    try:
        return _import(request)
    finally:
        connections.close_all()  # this thread's own connections; the next import may run in another thread


def _import(request):
    too_large = gettext("The file is larger than %(mb)s MB.") % {"mb": exports.MAX_IMPORT_BYTES // 2**20}
    # Refuse an oversized upload before Django reads (and spools) it.
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > exports.MAX_IMPORT_BYTES + 64 * 1024:
        return error("too_large", too_large, 413)
    upload = request.FILES.get("file")
    if upload is None:
        return error("bad_parameter", gettext("Send the file as the multipart field “file”."), 400, field="file")
    if upload.size > exports.MAX_IMPORT_BYTES:
        return error("too_large", too_large, 413)
    try:
        with import_limits.admitted(request.user):
            result = exports.import_conversations(request.user, upload.read())
    except import_limits.ImportRefused as exc:
        response = error(exc.code, str(exc), exc.status, retry_after=exc.retry_after)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except exports.ImportRejected as exc:
        status = 413 if exc.code == "too_large" else 400
        return error(exc.code, str(exc), status, field=exc.field)
    return JsonResponse(
        {
            "imported": len(result.imported),
            "conversation_ids": result.imported,
            "skipped": len(result.skipped),
            "skipped_ids": result.skipped,
        },
        status=201 if result.imported else 200,
    )
