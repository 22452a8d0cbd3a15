"""An answer's row while and after it runs: checkpoints of the text so far, and the final store with its
credits settled."""

from __future__ import annotations

from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Conversation, Message
from conversations.services.billing import credits
from conversations.services.chat.sending import Continued


def checkpoint(rows: list[tuple[int, str, str, int]]) -> None:
    """Save the partial text of answers in progress (message id, content, reasoning, seq), so a crash loses at most a
    few seconds of them. One transaction for all the answers of a worker: one commit, one trip to the database
    thread, however many are running. An answer that has ended meanwhile is left as it was stored.

    One statement run for every row (``executemany``): what ``filter(pk=…, status=streaming).update(content=…,
    reasoning=…, seq=…)`` would run, compiled once instead of once a row (the ORM's compilation was 7% of a worker's
    CPU at 600 answers streaming; docs/performance.md)."""
    quote, meta = connection.ops.quote_name, Message._meta
    content, reasoning, seq, status = (
        quote(meta.get_field(name).column) for name in ("content", "reasoning", "seq", "status")
    )
    pk = quote(meta.pk.column)
    # Identifiers from the model's own meta, quoted; every value is a parameter.
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {content} = %s, {reasoning} = %s, {seq} = %s "  # noqa: S608
        f"WHERE {pk} = %s AND {status} = %s"
    )
    streaming = Message.Status.STREAMING.value
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, [(text, thought, n, message_id, streaming) for message_id, text, thought, n in rows])


def finish_message(
    message_id: int,
    *,
    status: str,
    content: str,
    reasoning: str,
    seq: int,
    finish_reason: str = "",
    usage: Usage | None = None,
    usage_estimated: bool = False,
    error_code: str = "",
    error_message: str = "",
    request_id: str = "",
    reservation: credits.Reservation | None = None,
    continued: Continued | None = None,
    searches: list[dict] | None = None,
    fees: Decimal = Decimal(0),
    reasoning_ms: int | None = None,
) -> tuple[Message, Decimal | None]:
    """Store the answer's final state and settle its credits; returns the message and the balance after.

    ``continued``: the answer was a Continue of a stored one. Its usage and cost add to the earlier part's; if it
    failed or was stopped before adding anything, the answer goes back to how it stood (still continuable) and this
    reservation is released. ``reasoning_ms``: how long the model thought before writing. ``searches``/``fees``: a
    tool-using answer's web searches and what they cost (chat/tools.py)."""
    nothing_new = continued is not None and seq == continued.seq and status != Message.Status.COMPLETE and not fees
    if nothing_new:
        status, finish_reason = continued.status, continued.finish_reason
        error_code, error_message = continued.error_code, continued.error_message
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        message.status = status
        message.content = content
        message.reasoning = reasoning
        message.seq = seq
        message.finish_reason = finish_reason
        message.error_code = error_code
        message.error_message = error_message
        message.upstream_request_id = request_id[:128]
        message.completed_at = timezone.now()
        if searches is not None:
            message.searches = searches
        if reasoning_ms is not None:  # a continuation's thinking adds to the earlier part's
            message.reasoning_ms = (message.reasoning_ms or 0) + reasoning_ms if continued else reasoning_ms
        message.save(
            update_fields=[
                *(["searches"] if searches is not None else []),
                *(["reasoning_ms"] if reasoning_ms is not None else []),
                "status",
                "content",
                "reasoning",
                "seq",
                "finish_reason",
                "error_code",
                "error_message",
                "upstream_request_id",
                "completed_at",
            ]
        )
        balance = None
        if reservation is not None:
            if nothing_new:  # not passed the message: it keeps the cost of its earlier part
                balance = credits.release(reservation, note="the continuation added nothing")
            elif not content and not reasoning and not fees and status != Message.Status.COMPLETE:
                # Nothing was generated (a failed request, or stopped before the first token): it costs nothing.
                balance = credits.release(reservation, message=message, note=error_code or status)
            else:
                balance = credits.settle(
                    reservation,
                    message=message,
                    usage=usage,
                    estimated=usage_estimated,
                    adds_to_message=continued is not None,
                    fees=fees,
                ).balance
        Conversation.objects.filter(pk=message.conversation_id).update(updated_at=timezone.now())
    return message, balance


def save_searches(message_id: int, searches: list[dict]) -> None:
    """A running answer's searches, stored as each starts and ends: a reload, or another worker, shows them."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(searches=searches)


def usage_estimate(prompt_tokens: int, content: str, reasoning: str) -> Usage:
    completion = estimate_tokens_locally(content) + estimate_tokens_locally(reasoning)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)
