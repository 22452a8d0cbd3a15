"""The public, read-only page behind a share link. No login: the unguessable token is the permission.

A page shows the newest ``SHARE_PAGE_MESSAGES`` shared messages; older ones are behind ``?before=<message id>``.
The rendered messages of a page are cached per link, page and language (the page around them is rendered per
request: it may carry the reader's own flash messages). Every request first reads the link, so a revoked link's
cached pages are never served.
"""

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.http import Http404
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.translation import get_language
from django.views.decorators.http import require_GET

from conversations.services.history import render as markdown
from conversations.services.history import shares

MAX_ID = 2**63 - 1


def _before(request) -> int | None:
    raw = request.GET.get("before")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise Http404("No such page.")
    return int(raw)


@login_not_required
@require_GET
def shared_conversation(request, token: str):
    before = _before(request)
    link = shares.active_link(token)
    if link is None:
        raise Http404("No such share link.")
    key = shares.page_cache_key(link, before, get_language())
    fragment = cache.get(key)
    if fragment is None:
        page = shares.shared_page(link, before)
        entries = [
            {
                "message": m,
                "html": markdown.render_markdown(m.content, doc_id=m.pk) if m.role == m.Role.ASSISTANT else None,
            }
            for m in page.messages
        ]
        fragment = render_to_string(
            "conversations/shared_messages.html", {"entries": entries, "page": page, "token": link.token}
        )
        cache.set(key, fragment, shares.PAGE_CACHE_SECONDS)
    response = render(
        request,
        "conversations/shared.html",
        {"conversation": link.conversation, "messages_html": fragment},
    )
    # Shared by a link, not published: keep it out of search engines and caches shared between users.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "private, no-store"
    return response
