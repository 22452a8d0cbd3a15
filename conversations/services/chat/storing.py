"""An answer's row while and after it runs: checkpoints of the text so far, and the final store with its
credits settled."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Conversation, Message
from conversations.services.billing import credits, pricing
from conversations.services.chat.sending import Continued

logger = logging.getLogger(__name__)


# The columns every final store writes.
ANSWER_COLUMNS = (
    "status",
    "content",
    "reasoning",
    "seq",
    "finish_reason",
    "error_code",
    "error_message",
    "upstream_request_id",
    "completed_at",
)


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
                *ANSWER_COLUMNS,
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


@dataclass
class Final:
    """An answer's final state as ``finish_message`` takes it (``fields``: its keyword arguments)."""

    message_id: int
    fields: dict = field(default_factory=dict)


# What the final store writes on the answer's row: finish_message's columns (searches and reasoning_ms when given)
# and settle's (``_record_on_message``).
FINAL_COLUMNS = (
    *ANSWER_COLUMNS,
    "searches",
    "reasoning_ms",
    "cost",
    "usage_estimated",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
)


class _OneByOne(Exception):
    """The batch met a case only ``finish_message`` words exactly: nothing of it is kept, each answer goes alone."""


def finish_many(finals: list[Final]) -> list:
    """``finish_message`` for answers that end together: each outcome as it returns it (the message and the balance
    after) or the exception it raises, in order.

    The answers of a busy worker end many a second, and one by one each costs 13 statements and ~4 ms of the
    database thread's CPU (``bench/sendpath.py``). Here the batch takes a fixed number of statements whatever its
    size: the rows read and locked (1), the prices (1), the ledger's ``close_many`` (5), the rows written (one
    statement run for each row, compiled once) and the conversations touched (1). Continuations (their usage and
    cost add to the stored part's), an answer listed twice, one whose row is gone, whose reservation was closed
    before or whose user has no account go alone through ``finish_message``, which words their outcome; so does
    every answer of a batch whose transaction fails. ``tests/test_bulk_store.py`` compares the rows with
    ``finish_message``'s."""
    outcomes: list = [None] * len(finals)
    together, seen = [], set()
    for index, final in enumerate(finals):
        if final.fields.get("continued") is None and final.message_id not in seen:
            together.append(index)
            seen.add(final.message_id)
    if together:  # a batch of one too: 11 statements with its transaction's, against finish_message's 13
        try:
            with transaction.atomic():
                stored = _store_together([finals[index] for index in together])
            for index, outcome in zip(together, stored, strict=True):
                outcomes[index] = outcome
        except _OneByOne:
            pass
        except Exception:  # noqa: BLE001 - nothing of the batch was stored (one transaction): each goes alone
            if len(together) > 1:  # alone, finish_message meets (and raises) the same failure
                logger.exception("A batch of %d final stores failed; storing them one by one", len(together))
    for index, final in enumerate(finals):
        if outcomes[index] is None:
            try:
                outcomes[index] = finish_message(final.message_id, **final.fields)
            except Exception as exc:  # noqa: BLE001 - handed to the answer that awaits it, as one by one raises it
                outcomes[index] = exc
    return outcomes


def _store_together(finals: list[Final]) -> list[tuple[Message, Decimal | None]]:
    rows = {
        message.pk: message
        for message in Message.objects.select_for_update()
        .filter(pk__in=[final.message_id for final in finals])
        .order_by("pk")
    }
    if len(rows) != len(finals):
        raise _OneByOne
    now = timezone.now()
    settled = [final for final in finals if _generated(final.fields) and final.fields.get("reservation")]
    prices = pricing.prices_for({final.fields["reservation"].model for final in settled})
    reservations, closings, charged = [], [], []
    for final in finals:
        fields, message = final.fields, rows[final.message_id]
        message.status = fields["status"]
        message.content = fields["content"]
        message.reasoning = fields["reasoning"]
        message.seq = fields["seq"]
        message.finish_reason = fields.get("finish_reason", "")
        message.error_code = fields.get("error_code", "")
        message.error_message = fields.get("error_message", "")
        message.upstream_request_id = fields.get("request_id", "")[:128]
        message.completed_at = now
        if fields.get("searches") is not None:
            message.searches = fields["searches"]
        if fields.get("reasoning_ms") is not None:
            message.reasoning_ms = fields["reasoning_ms"]
        reservation = fields.get("reservation")
        if reservation is None:
            continue
        reservations.append(reservation)
        charged.append(final)
        if _generated(fields):
            closings.append(
                credits.settling(
                    reservation,
                    fields.get("usage"),
                    fields.get("usage_estimated", False),
                    price=prices[reservation.model],
                    fees=fields.get("fees", Decimal(0)),
                    message_id=message.pk,
                )
            )
        else:  # nothing was generated (a failed request, or stopped before the first token): it costs nothing
            closings.append(
                credits.releasing(reservation, fields.get("error_code") or fields["status"], message_id=message.pk)
            )
    balances: list = []
    costs = credits.close_many(reservations, closings, messages_recorded=True, balances=balances)
    if any(cost is None for cost in costs) or any(balance is None for balance in balances):
        raise _OneByOne  # closed before, or no account yet: finish_message says so, or opens it
    balance_of = {}
    for final, closing, cost, balance in zip(charged, closings, costs, balances, strict=True):
        message = rows[final.message_id]
        message.cost = cost
        if closing.usage is not None:  # a settlement records its usage; a release only its cost (nothing)
            usage = closing.usage
            message.usage_estimated = closing.estimated
            message.prompt_tokens = max(usage.prompt_tokens, 0)
            message.completion_tokens = max(usage.completion_tokens, 0)
            message.total_tokens = max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 0)
            message.cached_tokens = max(usage.cached_tokens, 0)
        balance_of[final.message_id] = balance
    _write_final_rows([rows[final.message_id] for final in finals])
    Conversation.objects.filter(pk__in={message.conversation_id for message in rows.values()}).update(updated_at=now)
    return [(rows[final.message_id], balance_of.get(final.message_id)) for final in finals]


def _generated(fields: dict) -> bool:
    """Whether settling charges it (``finish_message``'s rule): a release when nothing was generated."""
    return bool(
        fields["content"] or fields["reasoning"] or fields.get("fees") or fields["status"] == Message.Status.COMPLETE
    )


def _write_final_rows(messages: list[Message]) -> None:
    """``UPDATE`` each row's ``FINAL_COLUMNS``, one statement run for every row (``executemany``), each value
    prepared by its field as ``save()`` prepares it."""
    quote, meta = connection.ops.quote_name, Message._meta
    fields = [meta.get_field(name) for name in FINAL_COLUMNS]
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    # Identifiers from the model's own meta, quoted; every value is a parameter.
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    params = [
        [f.get_db_prep_save(getattr(message, f.attname), connection) for f in fields] + [message.pk]
        for message in messages
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def save_searches(message_id: int, searches: list[dict]) -> None:
    """A running answer's searches, stored as each starts and ends: a reload, or another worker, shows them."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(searches=searches)


def usage_estimate(prompt_tokens: int, content: str, reasoning: str) -> Usage:
    completion = estimate_tokens_locally(content) + estimate_tokens_locally(reasoning)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)
