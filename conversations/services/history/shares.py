"""Read-only share links: create, list, revoke, and read the shared snapshot."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation, Message, SharedLink


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
    return owned.update(revoked_at=timezone.now()) == 1


def shared_snapshot(token: str) -> tuple[Conversation, list[Message]] | None:
    """The conversation and the messages a public reader may see, or None for an unknown or revoked token.

    The thread is the one that was current when the link was made: a message counts if it was not yet replaced at
    that moment (replacements always have higher ids), so regenerating an answer later does not change the page.
    Unfinished answers are left out: their text is still changing.
    """
    link = (
        SharedLink.objects.select_related("conversation__owner")
        .filter(token=token, revoked_at__isnull=True, conversation__owner__is_active=True)
        .first()
    )
    if link is None:
        return None
    up_to = link.up_to_message_id
    messages = list(
        Message.objects.filter(conversation_id=link.conversation_id, id__lte=up_to)
        .filter(Q(superseded_by__isnull=True) | Q(superseded_by_id__gt=up_to))
        .exclude(status__in=[Message.Status.PENDING, Message.Status.STREAMING])
        .exclude(role=Message.Role.SYSTEM)
        .order_by("id")
        .prefetch_related("attachments")  # their names are shown, never their contents
    )
    return link.conversation, messages
