"""POST /api/conversations/<id>/branch/: show another branch of a conversation (docs/api.md, "Branches").

The branch chosen is stored (``Message.superseded_by``), so a reload, another tab and the next send follow it.
"""

from __future__ import annotations

import orjson
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from conversations.api.conversations import conversation_with_messages
from conversations.api.responses import error, not_found, own_conversation
from conversations.services.history import branches

MAX_BODY_BYTES = 1024
PAGE = 100  # messages of the new branch returned, newest last (older ones: GET ?before=)


@require_POST
def branch_switch(request, conversation_id: int):
    """Body ``{"message_id": <id>}``: any message of the conversation; its branch (the path to it, then the
    continuation it had when last shown) becomes the active one. Answers like GET on the conversation."""
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    if request.content_type != "application/json":  # (a form body is read by the CSRF check: its bytes are gone)
        return error("unsupported_media_type", "the body must be JSON (Content-Type: application/json)", 415)
    if len(request.body) > MAX_BODY_BYTES:
        return error("too_large", f"the body must be at most {MAX_BODY_BYTES} bytes", 413)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return error("bad_json", f"the body is not valid JSON: {exc}", 400)
    message_id = body.get("message_id") if isinstance(body, dict) else None
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id < 2**63:
        return error("bad_parameter", "'message_id' must be a message id (a positive whole number).", 400)
    try:
        branches.switch_branch(conversation, message_id)
    except branches.BranchNotFound:
        return not_found("No such message in this conversation.")
    except branches.BranchBusy:
        return error("busy", "An answer is still being written in this conversation; wait for it or stop it.", 409)
    return JsonResponse(conversation_with_messages(conversation, limit=PAGE, before=None, all_branches=False))
