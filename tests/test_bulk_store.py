"""Answers that end together are stored together (``storing.finish_many``), with ``finish_message``'s rules.

Each equivalence test builds the same situation twice, for two sets of users: one set's answers are stored in one
batch, the other's one by one through ``finish_message`` (what every answer did before). What they write on the
answers' rows, charge, refund and return must be the same. Real database."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.kimi.events import Usage
from conversations.models import Conversation, CreditAccount, CreditTransaction, Message
from conversations.services.billing import credits, pricing
from conversations.services.chat import registry as registry_module
from conversations.services.chat import sending, storing
from tests.test_bulk_finish import LEDGER_FIELDS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _credits(settings):
    settings.KIMICHAT_SIGNUP_CREDITS = 1000  # enough for a user's two answers at these prices


MODEL = "kimi-k2.6"
OTHER = "moonshot-v1-8k"
KNOWN = [MODEL, OTHER]
MESSAGE_FIELDS = tuple(name for name in storing.FINAL_COLUMNS if name != "completed_at")


def _prices() -> None:
    pricing.set_price(MODEL, per_request=Decimal("0.01"), per_million_prompt=600, per_million_completion=2500,
                      per_million_cached=150)  # fmt: skip
    pricing.set_price(
        OTHER, per_request=0, per_million_prompt=2000, per_million_completion=2000, per_million_cached=2000
    )


def _send(user, content="A question of a few words.", model=MODEL) -> sending.Accepted:
    return sending.prepare_send(
        user, conversation_id=None, content=content, client_msg_id=uuid.uuid4(), model=model, known_models=KNOWN
    )


def _final(accepted: sending.Accepted, **fields) -> storing.Final:
    fields.setdefault("reservation", accepted.reservation)
    fields.setdefault("continued", accepted.continued)
    return storing.Final(accepted.assistant.pk, fields)


def _situation(make_user, prefix: str) -> list[storing.Final]:
    """Five users and the ends of nine answers: complete with the upstream's usage (and thinking), complete with no
    usage (a user's second answer), stopped with a local count, complete but empty, failed and stopped before a token
    (released), with searches and their fees and a usage beyond the reservation, without a reservation, and a
    continuation."""
    a, b, c, d, e = (make_user(f"{prefix}{n}") for n in range(5))
    cut = _send(e, "Write a long story")
    storing.finish_message(
        cut.assistant.pk,
        status=Message.Status.COMPLETE,
        content="Once upon a time",
        reasoning="",
        seq=4,
        finish_reason="length",
        usage=Usage(prompt_tokens=30, completion_tokens=4, total_tokens=34),
        reservation=cut.reservation,
    )
    continued = sending.prepare_continue(
        e,
        conversation_id=cut.conversation.pk,
        message_id=cut.assistant.pk,
        client_msg_id=uuid.uuid4(),
        known_models=KNOWN,
    )
    no_reservation = _send(d, "Kept without a reservation")
    credits.release(no_reservation.reservation, note="test: answered for free")
    return [
        _final(
            _send(a),
            status=Message.Status.COMPLETE,
            content="Paris is the capital of France.",
            reasoning="The user asks about France.",
            seq=7,
            finish_reason="stop",
            usage=Usage(prompt_tokens=50, completion_tokens=20, total_tokens=70, cached_tokens=10),
            request_id="req-" + "x" * 200,  # cut at 128
            reasoning_ms=1200,
        ),
        _final(_send(a, model=OTHER), status=Message.Status.COMPLETE, content="Yes.", reasoning="", seq=1),
        _final(
            _send(b),
            status=Message.Status.STOPPED,
            content="Half an answer",
            reasoning="",
            seq=3,
            usage=storing.usage_estimate(12, "Half an answer", ""),
            usage_estimated=True,
        ),
        _final(  # complete, yet empty: charged for its prompt all the same
            _send(b, model=OTHER),
            status=Message.Status.COMPLETE,
            content="",
            reasoning="",
            seq=0,
            finish_reason="stop",
            usage=Usage(prompt_tokens=25, completion_tokens=0, total_tokens=25),
        ),
        _final(
            _send(c),
            status=Message.Status.ERROR,
            content="",
            reasoning="",
            seq=0,
            error_code="upstream_server_error",
            error_message="The provider failed.",
        ),
        _final(_send(c), status=Message.Status.STOPPED, content="", reasoning="", seq=0),
        _final(
            _send(d, "Search the web"),
            status=Message.Status.COMPLETE,
            content="Found it [1].",
            reasoning="",
            seq=5,
            finish_reason="stop",
            usage=Usage(prompt_tokens=90, completion_tokens=900_000, total_tokens=900_090),  # beyond the reservation
            searches=[{"query": "kimi", "status": "done", "results": [{"title": "Kimi", "url": "https://k.example"}]}],
            fees=Decimal("0.005"),
        ),
        _final(no_reservation, reservation=None, status=Message.Status.COMPLETE, content="Free.", reasoning="", seq=1),
        _final(
            continued,
            status=Message.Status.COMPLETE,
            content="Once upon a time, there was a cat.",
            reasoning="",
            seq=9,
            finish_reason="stop",
            usage=Usage(prompt_tokens=40, completion_tokens=8, total_tokens=48),
        ),
    ]


def _one_by_one(finals: list[storing.Final]) -> list:
    outcomes = []
    for final in finals:
        try:
            outcomes.append(storing.finish_message(final.message_id, **final.fields))
        except Exception as exc:  # noqa: BLE001 - compared with the batch's outcome
            outcomes.append(exc)
    return outcomes


def _outcome(outcome, ids: dict[int, int]):
    if isinstance(outcome, Exception):
        return type(outcome).__name__
    message, balance = outcome
    return ids[message.pk], {name: getattr(message, name) for name in MESSAGE_FIELDS}, balance


def _stored(finals: list[storing.Final], users_prefix: str) -> tuple:
    """The answers' rows and every ledger row and balance of the set's users, ids replaced by positions."""
    ids = {final.message_id: n for n, final in enumerate(finals)}
    rows = []
    for final in finals:
        message = Message.objects.get(pk=final.message_id)
        assert message.completed_at is not None
        rows.append({name: getattr(message, name) for name in MESSAGE_FIELDS})
    ledger = [
        {**row, "message_id": ids.get(row["message_id"], "other"), "note": re.sub(r"#\d+", "#", row["note"])}
        for row in CreditTransaction.objects.filter(account__user__username__startswith=users_prefix)
        .order_by("account__user__username", "pk")
        .values(*LEDGER_FIELDS)
    ]
    balances = list(
        CreditAccount.objects.filter(user__username__startswith=users_prefix)
        .order_by("user__username")
        .values_list("balance", flat=True)
    )
    touched = list(
        Conversation.objects.filter(messages__pk__in=ids).order_by("pk").values_list("updated_at", flat=True).distinct()
    )
    return rows, ledger, balances, touched


def _twice(make_user, build=_situation):
    _prices()
    batch, single = build(make_user, "batch"), build(make_user, "single")
    started = time.time()
    together = storing.finish_many(batch)
    one_by_one = _one_by_one(single)
    return batch, single, together, one_by_one, started


def test_a_batch_stores_what_one_by_one_stores(make_user, settings):
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 5
    batch, single, together, one_by_one, started = _twice(make_user)
    batch_ids = {final.message_id: n for n, final in enumerate(batch)}
    single_ids = {final.message_id: n for n, final in enumerate(single)}
    assert [o for o in together if isinstance(o, Exception)] == []
    assert [_outcome(o, batch_ids) for o in together] == [_outcome(o, single_ids) for o in one_by_one]
    batch_rows, batch_ledger, batch_balances, batch_touched = _stored(batch, "batch")
    single_rows, single_ledger, single_balances, single_touched = _stored(single, "single")
    assert batch_rows == single_rows
    assert batch_ledger == single_ledger
    assert batch_balances == single_balances
    assert all(moment.timestamp() >= started - 1 for moment in batch_touched)  # each conversation moves up the list
    # The cases are what they say: a settlement, a release, a charge capped at the reservation, no charge at all.
    states = [row["state"] for row in batch_ledger if row["kind"] == "charge"]
    assert "settled" in states and "released" in states
    assert batch_rows[3]["cost"] > 0
    assert batch_rows[4]["cost"] == batch_rows[5]["cost"] == 0
    assert batch_rows[7]["cost"] == Message._meta.get_field("cost").default
    assert any("beyond the reservation not charged" in row["note"] for row in batch_ledger)
    assert batch_rows[0]["upstream_request_id"] == ("req-" + "x" * 200)[:128]
    assert batch_rows[6]["searches"][0]["query"] == "kimi"


def test_a_batch_costs_the_same_statements_for_two_and_six_answers(make_user):
    """The point of the batch: its statements do not grow with its size (one by one, 13 an answer)."""
    _prices()
    counts = []
    for prefix, size in (("two", 2), ("six", 6)):
        finals = [
            _final(
                _send(make_user(f"{prefix}{n}")),
                status=Message.Status.COMPLETE,
                content=f"answer {n}",
                reasoning="",
                seq=2,
                usage=Usage(prompt_tokens=20, completion_tokens=5, total_tokens=25),
            )
            for n in range(size)
        ]
        with CaptureQueriesContext(connection) as captured:
            outcomes = storing.finish_many(finals)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts
    assert counts[1] < 13 * 6 / 3, counts


def test_a_batch_whose_transaction_fails_is_stored_one_by_one(make_user, settings, monkeypatch, caplog):
    """A batch that fails as a whole (staged: the ledger's write raises) keeps nothing of it; each answer is then
    stored alone, as before, and the failure is logged."""
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 5
    real = credits.close_many

    def fail(*args, **kwargs):
        real(*args, **kwargs)  # its writes happen, then are rolled back with the batch's transaction
        raise RuntimeError("the database went away")

    monkeypatch.setattr(credits, "close_many", fail)
    batch, single, together, one_by_one, _ = _twice(make_user)
    batch_ids = {final.message_id: n for n, final in enumerate(batch)}
    single_ids = {final.message_id: n for n, final in enumerate(single)}
    assert [_outcome(o, batch_ids) for o in together] == [_outcome(o, single_ids) for o in one_by_one]
    assert _stored(batch, "batch")[:3] == _stored(single, "single")[:3]
    assert any("final stores failed" in record.getMessage() for record in caplog.records)


def test_an_answer_whose_reservation_was_closed_fails_alone_as_before(make_user):
    """A reservation closed before (an answer listed twice, say) fails its own store with ``ReservationClosed``, as
    ``finish_message`` does; the batch goes one by one, so the other answers are stored as usual."""

    def build(make, prefix):
        people = [make(f"{prefix}{n}") for n in range(3)]
        finals = [
            _final(_send(person), status=Message.Status.COMPLETE, content="done", reasoning="", seq=1)
            for person in people
        ]
        return [*finals, finals[1]]  # the second answer again: its reservation is closed by then

    batch, single, together, one_by_one, _ = _twice(make_user, build)
    batch_ids = {final.message_id: n for n, final in enumerate(batch)}
    single_ids = {final.message_id: n for n, final in enumerate(single)}
    assert [_outcome(o, batch_ids) for o in together] == [_outcome(o, single_ids) for o in one_by_one]
    assert isinstance(together[3], credits.ReservationClosed)
    assert _stored(batch[:3], "batch")[:3] == _stored(single[:3], "single")[:3]


def test_an_answer_whose_conversation_was_deleted_fails_alone_as_before(make_user):
    """A conversation deleted while its answer ran (its row is gone): that answer's store raises ``DoesNotExist`` as
    ``finish_message``'s does, and the others of the batch are stored."""

    def build(make, prefix):
        people = [make(f"{prefix}{n}") for n in range(3)]
        accepted = [_send(person) for person in people]
        finals = [_final(a, status=Message.Status.COMPLETE, content="done", reasoning="", seq=1) for a in accepted]
        Conversation.objects.filter(pk=accepted[1].conversation.pk).delete()
        return finals

    batch, single, together, one_by_one, _ = _twice(make_user, build)
    assert [type(o).__name__ for o in together] == [type(o).__name__ for o in one_by_one]
    assert isinstance(together[1], Message.DoesNotExist)
    kept = [batch[0], batch[2]]
    assert _stored(kept, "batch")[0] == _stored([single[0], single[2]], "single")[0]


def test_answers_stored_together_are_found_by_search(make_user):
    """The search index (SQLite's FTS5 triggers, PostgreSQL's generated column) follows the batch's writes."""
    from tests.test_search_index import indexed, integrity_check

    _prices()
    finals = [
        _final(_send(make_user(f"fts{n}")), status=Message.Status.COMPLETE, content=f"zyx {n}", reasoning="", seq=1)
        for n in range(3)
    ]
    assert all(not isinstance(o, Exception) for o in storing.finish_many(finals))
    assert all(indexed(final.message_id) for final in finals)
    integrity_check()


# --- through the sockets --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_answers_that_end_together_through_the_sockets_are_stored_together(connect, make_user, monkeypatch):
    """Six people's answers end while a store runs (staged: the first store waits a second on the database thread):
    they are stored in one batch, each with its own `done` frame, row and settled charge."""
    from asgiref.sync import sync_to_async

    real = registry_module.finish_many
    sizes = []

    def slow_first(finals):
        sizes.append(len(finals))
        if len(sizes) == 1:
            time.sleep(1.0)
        return real(finals)

    monkeypatch.setattr(registry_module, "finish_many", slow_first)
    people = [await sync_to_async(make_user)(f"ends{n}") for n in range(6)]
    tabs = [await connect(person) for person in people]
    await asyncio.gather(*(tab.say(f"question {n} [[tokens:4]]") for n, tab in enumerate(tabs)))
    dones = [(await tab.answer())[0] for tab in tabs]
    assert [done["status"] for done in dones] == ["complete"] * 6
    assert max(sizes) > 1, sizes
    assert sum(sizes) == 6, sizes

    def stored():
        return [
            (
                Message.objects.get(pk=done["message_id"]).status,
                str(Message.objects.get(pk=done["message_id"]).cost),
                CreditTransaction.objects.filter(account__user=person, kind="charge", state="settled").count(),
                str(CreditAccount.objects.get(user=person).balance),
            )
            for person, done in zip(people, dones, strict=True)
        ]

    rows = await sync_to_async(stored)()
    assert [(status, count) for status, _, count, _ in rows] == [("complete", 1)] * 6
    assert [(done["cost"], done["balance"]) for done in dones] == [(cost, balance) for _, cost, _, balance in rows]
