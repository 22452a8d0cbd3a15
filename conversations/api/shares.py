"""Share links: create and list a conversation's, revoke one by its token (owner only)."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations.api.responses import error, not_found, own_conversation, temporary_refused
from conversations.services.history import shares


@require_POST
def share_create(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    if conversation.temporary:
        return temporary_refused("shared")
    try:
        link = shares.create_share(conversation)
    except shares.NothingToShare:
        return error("empty_conversation", "There is nothing to share yet.", 409)
    return JsonResponse(shares.share_to_dict(link), status=201)


@require_GET
def share_list(request, conversation_id: int):
    conversation = own_conversation(request, conversation_id)
    if conversation is None:
        return not_found()
    return JsonResponse({"results": [shares.share_to_dict(link) for link in shares.active_shares(conversation)]})


@require_http_methods(["DELETE"])
def share_revoke(request, token: str):
    if not shares.revoke_share(request.user, token):
        return not_found("No such share link.")
    return HttpResponse(status=204)
