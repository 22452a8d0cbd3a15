"""The public, read-only page behind a share link. No login: the unguessable token is the permission."""

from django.contrib.auth.decorators import login_not_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from conversations.services.history import render as markdown
from conversations.services.history import shares


@login_not_required
@require_GET
def shared_conversation(request, token: str):
    snapshot = shares.shared_snapshot(token)
    if snapshot is None:
        raise Http404("No such share link.")
    conversation, messages = snapshot
    entries = [
        {"message": m, "html": markdown.render_markdown(m.content) if m.role == m.Role.ASSISTANT else None}
        for m in messages
    ]
    response = render(
        request,
        "conversations/shared.html",
        {"conversation": conversation, "entries": entries},
    )
    # Shared by a link, not published: keep it out of search engines and caches shared between users.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "private, no-store"
    return response
