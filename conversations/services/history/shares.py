"""Read-only share links: create, list, revoke, and read the shared snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext

from conversations.models import Conversation, Message, SharedLink
from conversations.services.history import branches


class NothingToShare(Exception):
    """The conversation has no finished message yet."""


def share_url(link: SharedLink) -> str:
    return f"/s/{link.token}/"


def share_to_dict(link: SharedLink) -> dict:
    return {
        "token": link.token,
        "url": share_url(link),
        "created_at": link.created_at.isoformat(),
        "up_to_message_id": link.up_to_message_id,
    }


def create_share(conversation: Conversation) -> SharedLink:
    """Share the conversation as it is now: later messages are never shown through this link."""
    latest = Message.objects.filter(conversation=conversation).current().order_by("-id").values_list("id", flat=True)
    up_to = latest.first()
    if up_to is None:
        raise NothingToShare
    return SharedLink.objects.create(conversation=conversation, up_to_message_id=up_to)


def active_shares(conversation: Conversation) -> list[SharedLink]:
    return list(conversation.shared_links.filter(revoked_at__isnull=True).order_by("-created_at", "-id"))


def revoke_share(user, token: str) -> bool:
    """Revoke one of the user's active links; False when there is no such link (or it is someone else's)."""
    owned = SharedLink.objects.filter(
        token=token, revoked_at__isnull=True, conversation__in=Conversation.objects.for_user(user)
    )
    link = owned.first()
    if link is None or owned.update(revoked_at=timezone.now()) != 1:
        return False
    # The public page reads the link before its cache, so these pages could not be served anyway; dropping the
    # latest ones frees the memory now (older pages expire after PAGE_CACHE_SECONDS).
    cache.delete_many([page_cache_key(link, None, code) for code, _name in settings.LANGUAGES])
    return True


# One page of a shared conversation: the newest messages first, older ones behind a cursor. A 100,000-message
# conversation rendered whole took ~8 s and 28 MB of HTML per anonymous request.
SHARE_PAGE_MESSAGES = 100
SHARE_PAGE_CHARS = 400_000  # of message text per page (a few long answers fill a page before 100 messages do)
SHARE_MESSAGE_CHARS = 100_000  # one message beyond this is cut on the page (an imported message can be 20 MB)
PAGE_CACHE_SECONDS = 300  # short: an answer that was still streaming when shared appears once it finishes


@dataclass
class SharedPage:
    conversation: Conversation
    messages: list[Message]  # oldest first
    older: int | None  # the cursor (a message id) of the page before this one, None on the first page
    newest: bool  # this is the latest page (no ``before``)


def active_link(token: str) -> SharedLink | None:
    """The link behind a public token if a reader may see it (not revoked, owner active). One query, by the unique
    token, on every request: the page cache is consulted only after it, so a revoked link's page is never served."""
    return (
        SharedLink.objects.select_related("conversation")
        .filter(token=token, revoked_at__isnull=True, conversation__owner__is_active=True)
        .first()
    )


def shared_page(link: SharedLink, before: int | None = None) -> SharedPage:
    """The messages a public reader may see, newest ``SHARE_PAGE_MESSAGES`` (or ``SHARE_PAGE_CHARS``) older than
    ``before``; one query reading at most ``SHARE_PAGE_MESSAGES + 1`` rows.

    The thread is the branch that was shown when the link was made: the path from the first message to
    ``up_to_message_id`` (the leaf then), so a later regenerate, edit or branch switch does not change the page.
    Unfinished answers are left out: their text is still changing.
    """
    rows = (
        Message.objects.filter(conversation_id=link.conversation_id, id__in=branches.path_to(link.up_to_message_id))
        .exclude(status__in=[Message.Status.PENDING, Message.Status.STREAMING])
        .exclude(role=Message.Role.SYSTEM)
    )
    if before is not None:
        rows = rows.filter(id__lt=before)
    # Attachments: their names are shown, never their contents (one more query, for this page's rows only).
    newest_first = list(rows.order_by("-id").prefetch_related("attachments")[: SHARE_PAGE_MESSAGES + 1])
    shown, chars = [], 0
    for message in newest_first[:SHARE_PAGE_MESSAGES]:
        if shown and chars + len(message.content) + len(message.reasoning) > SHARE_PAGE_CHARS:
            break
        _cut(message)
        chars += len(message.content) + len(message.reasoning)
        shown.append(message)
    older = shown[-1].pk if len(shown) < len(newest_first) else None
    return SharedPage(conversation=link.conversation, messages=shown[::-1], older=older, newest=before is None)


def _cut(message: Message) -> None:
    """Bound one message's share of a page (never saved: the row keeps its text)."""
    for name in ("content", "reasoning"):
        text = getattr(message, name)
        if len(text) > SHARE_MESSAGE_CHARS:
            more = len(text) - SHARE_MESSAGE_CHARS
            note = gettext("[… %(count)s more characters not shown]") % {"count": f"{more:,}"}
            setattr(message, name, f"{text[:SHARE_MESSAGE_CHARS]}\n\n{note}")


def page_cache_key(link: SharedLink, before: int | None, language: str) -> str:
    return f"share-page:{link.pk}:{link.token}:{before or 'latest'}:{language}"
