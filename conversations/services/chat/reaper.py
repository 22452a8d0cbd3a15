"""Reaping: answers whose worker died are marked interrupted with their last checkpoint's text, and charged for
what was written. Run by every worker's registry on a timer and by ``manage.py reapgenerations`` at start-up."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.models import Message
from conversations.services.billing import credits
from conversations.services.billing.search_fees import search_fee
from conversations.services.chat.storing import usage_estimate


def in_progress_ids(grace: float) -> list[int]:
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    # A continued answer is old but resumed just now (completed_at): it gets the same grace as a new one.
    answers = Message.objects.in_progress().filter(created_at__lt=cutoff).exclude(completed_at__gte=cutoff)
    return list(answers.values_list("id", flat=True))


def reap_message(message_id: int) -> tuple[Message | None, Decimal | None]:
    """Mark an orphaned answer interrupted with the text of its last checkpoint, and settle what it generated."""
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(pk=message_id).first()
        if message is None or message.is_final:
            return None, None
        message.status = Message.Status.INTERRUPTED
        message.error_code = "worker_lost"
        message.error_message = "The server stopped while this answer was being written; it was cut off."
        message.completed_at = timezone.now()
        # Searches stored while the answer ran were made upstream: they keep their fee; unanswered ones failed.
        searches = [{**s, "status": "failed" if s.get("status") == "searching" else s.get("status")}
                    for s in message.searches or []]  # fmt: skip
        message.searches = searches
        message.save(update_fields=["status", "error_code", "error_message", "completed_at", "searches"])
        balance = None
        reservation = credits.open_reservation_for(message)
        fees = search_fee(message.model) * len(searches) if searches else Decimal(0)
        if reservation is not None:
            if message.content or message.reasoning or fees:
                usage = usage_estimate(reservation.prompt_tokens, message.content, message.reasoning)
                # A continued answer already carries its earlier part's usage: this part is what came after it.
                continued = message.completion_tokens > 0
                if continued:
                    new = max(0, usage.completion_tokens - message.completion_tokens)
                    usage = Usage(usage.prompt_tokens, new, usage.prompt_tokens + new)
                balance = credits.settle(
                    reservation, message=message, usage=usage, estimated=True, adds_to_message=continued, fees=fees
                ).balance
            else:
                balance = credits.release(reservation, message=message, note="worker_lost")
    return message, balance


def reap_all_sync() -> int:
    """For ``manage.py reapgenerations`` at start-up, when no worker is running: every answer left is orphaned."""
    from conversations.services.personal import titles

    count = 0
    for message_id in in_progress_ids(0):
        message, _balance = reap_message(message_id)
        count += message is not None
    titles.release_orphaned()  # a title's credits held by a worker that died
    return count
