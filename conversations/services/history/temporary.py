"""Temporary chats: kept out of history while open, deleted once no tab shows them (docs/architecture.md).

A temporary chat is an ordinary conversation row with ``temporary=True``, so sending, streaming, resuming after a
reload and billing work exactly as for any chat. History never shows it: every history read goes through
``Conversation.objects.in_history()`` (sidebar, /api/conversations/, search, exports), and a share is refused.

While a socket of some worker follows it, that worker's heartbeat refreshes ``temporary_seen_at`` (``keep_alive``).
The reaper of any worker deletes the ones not seen for ``TEMPORARY_CHAT_GRACE`` seconds whose answer has finished
(``delete_abandoned``); a tab that leaves the chat in the page deletes it at once through DELETE
/api/conversations/<id>/. The cascade removes messages, attachments and share links; the ledger rows stay, their
message link nulled: the charge is kept, the content is not.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, Message

logger = logging.getLogger(__name__)


def keep_alive(conversation_ids) -> int:
    """Mark these temporary chats as shown by a tab now (the ids of history chats are ignored). One query."""
    if not conversation_ids:
        return 0
    return Conversation.objects.filter(pk__in=list(conversation_ids), temporary=True).update(
        temporary_seen_at=timezone.now()
    )


def abandoned_ids(grace: float) -> list[int]:
    """Temporary chats no tab has shown for ``grace`` seconds (an unset time counts as long ago)."""
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    unseen = Conversation.objects.filter(temporary=True).exclude(temporary_seen_at__gte=cutoff)
    return list(unseen.values_list("id", flat=True))


def delete_abandoned(grace: float) -> int:
    """Delete the temporary chats no tab has shown for ``grace`` seconds, except those with an answer still being
    written (they go once it ends: it must be settled first). Returns how many were deleted."""
    deleted = 0
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    for conversation_id in abandoned_ids(grace):
        with transaction.atomic():
            # Locked and read again: a tab may have come back, or a send may be starting an answer, meanwhile.
            locked = Conversation.objects.select_for_update().filter(pk=conversation_id, temporary=True).first()
            if locked is None or (locked.temporary_seen_at is not None and locked.temporary_seen_at >= cutoff):
                continue
            if Message.objects.filter(conversation=locked).in_progress().exists():
                continue
            locked.delete()
            deleted += 1
    if deleted:
        logger.info("deleted %d abandoned temporary chat(s)", deleted)
    return deleted
