"""Sending into a huge conversation costs what the model's window needs, not what the conversation holds: the cheap
checks (rate limit, busy, balance) come before any history is read, and the history is read newest first, a page at
a time, only until it fills the window."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Message
from conversations.services.billing import credits
from conversations.services.chat import sending
from conversations.services.chat.context import history_token_budget

pytestmark = pytest.mark.django_db

MODEL = "kimi-k2.6"
HUGE = 20_000
WORDS = "lorem ipsum dolor sit amet " * 40  # about 270 tokens by the local estimate


@pytest.fixture
def huge(owner):
    conversation = Conversation.objects.create(owner=owner, model=MODEL, title="huge")
    Message.objects.bulk_create(
        [
            Message(conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=f"{n} {WORDS}")
            for n in range(HUGE)
        ],
        batch_size=2000,
    )
    return conversation


def _send(owner, conversation):
    return sending.prepare_send(
        owner,
        conversation_id=conversation.pk,
        content="and one more question",
        client_msg_id=uuid.uuid4(),
        model=None,
        known_models=[MODEL],
    )


def _message_reads(queries) -> list[str]:
    """SELECTs that return message rows (not EXISTS/COUNT/one-row lookups)."""
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith("SELECT") and 'FROM "conversations_message"' in q["sql"] and "COUNT(" not in q["sql"]
    ]


def test_an_out_of_credit_send_into_a_huge_conversation_is_refused_without_reading_it(owner, huge):
    credits.adjust(owner, -credits.get_balance(owner), created_by=owner, note="spent")
    with CaptureQueriesContext(connection) as captured, pytest.raises(sending.SendRefused) as refused:
        _send(owner, huge)
    assert refused.value.code == "insufficient_credits"
    assert "Ask an administrator for more credits." in refused.value.message
    # Only the duplicate check (one row, by client_msg_id) and the busy check (EXISTS … LIMIT 1) touch messages.
    reads = _message_reads(captured.captured_queries)
    assert all(re.search(r"LIMIT 1\b", sql) for sql in reads), reads
    # 9: the groups' model allow-lists (services/accounts/model_access.py) joined the checks before any history read.
    assert len(captured.captured_queries) <= 9, [q["sql"][:120] for q in captured.captured_queries]
    assert Message.objects.filter(conversation=huge).count() == HUGE  # nothing stored


def test_a_send_into_a_huge_conversation_reads_only_what_fits_the_window(owner, huge):
    credits.grant(owner, 1000)
    per_message = 4 + len(f"10000 {WORDS}") // 4  # the reader's estimate of one message, give or take a token
    needed = history_token_budget(MODEL, None) // per_message + 1  # rows the window can take
    with CaptureQueriesContext(connection) as captured:
        accepted = _send(owner, huge)
    pages = [sql for sql in _message_reads(captured.captured_queries) if "ORDER BY" in sql and "DESC" in sql]
    assert pages and all(f"LIMIT {sending.HISTORY_PAGE}" in sql for sql in pages), pages
    rows_read_at_most = len(pages) * sending.HISTORY_PAGE
    assert rows_read_at_most <= needed + 2 * sending.HISTORY_PAGE, (rows_read_at_most, needed)
    assert needed < HUGE / 5  # the bound is the window, far below the conversation
    # The upstream request still gets the newest turns, ending with the new message, trimmed to the window.
    sent = accepted.request.messages
    assert sent[-1] == {"role": "user", "content": "and one more question"}
    assert sent[-2]["content"].startswith(f"{HUGE - 1} ")
    assert sent[0]["role"] == "user" and len(sent) <= needed + 1


def test_a_short_conversation_is_read_whole_in_one_query(owner):
    conversation = Conversation.objects.create(owner=owner, model=MODEL, title="short")
    Message.objects.create(conversation=conversation, role="user", content="first")
    Message.objects.create(conversation=conversation, role="assistant", content="answer")
    credits.grant(owner, 10)
    with CaptureQueriesContext(connection) as captured:
        accepted = _send(owner, conversation)
    pages = [sql for sql in _message_reads(captured.captured_queries) if "DESC" in sql and "LIMIT 100" in sql]
    assert len(pages) == 1
    assert [m["content"] for m in accepted.request.messages] == ["first", "answer", "and one more question"]


def test_a_regenerate_finds_the_last_question_behind_a_huge_answer(owner):
    """The reader stops at the window only after it has seen a user message: a regenerate needs the last one."""
    conversation = Conversation.objects.create(owner=owner, model=MODEL, title="long answer")
    Message.objects.create(conversation=conversation, role="user", content="old")
    question = Message.objects.create(conversation=conversation, role="user", content="write a lot")
    for _ in range(sending.HISTORY_PAGE + 5):  # more than a page of answers after the question (stopped ones)
        Message.objects.create(conversation=conversation, role="assistant", content="", status="stopped")
    credits.grant(owner, 10)
    accepted = sending.prepare_regenerate(
        owner, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), model=None, known_models=[MODEL]
    )
    assert accepted.request.messages[-1] == {"role": "user", "content": question.content}


def test_a_new_chats_send_costs_twenty_one_queries(owner):
    """The send of a new chat, as the socket makes it (``sending._Admitted``: session check, rate limit, prepare),
    pinned: a burst of sends queues on a worker's one database thread, so every query shows in its first delta."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session.update(
        {
            SESSION_KEY: str(owner.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: owner.get_session_auth_hash(),
        }
    )
    session.create()
    prepare = sending.aprepare_send.func  # the synchronous function the socket's trip runs
    with CaptureQueriesContext(connection) as captured:
        accepted = prepare(
            owner,
            session_key=session.session_key,
            conversation_id=None,
            content="a new question",
            client_msg_id=uuid.uuid4(),
            model=MODEL,
            known_models=[MODEL],
        )
    assert accepted.assistant.status == "streaming"
    # session row, user row; waiting for approval?; balance (tier); resend lookup; BEGIN, INSERT conversation,
    # the groups' model allow-lists, price (read once: the early refusal, with admit's balance, and the
    # reservation), INSERT user message, the user's custom instructions, INSERT answer, SAVEPOINT, account row, the
    # user's caps, the groups' budgets, UPDATE account, INSERT ledger row, RELEASE, COUNT of the user's running
    # answers, COMMIT. No UPDATE of the new conversation's updated_at: it was created now.
    statements = [q["sql"].split()[0] for q in captured.captured_queries]
    # 22 after issues 21-22; +1 the approval check (it was a trip of its own to the database thread: one trip per
    # send now), -1 the second price read, -1 the new conversation's bump. docs/performance.md.
    assert len(statements) == 21, statements
    assert not [q for q in captured.captured_queries if q["sql"].startswith("UPDATE") and 'conversation"' in q["sql"]]
    assert not [q for q in captured.captured_queries if "conversations_attachment" in q["sql"]]
    balance_reads = [
        q for q in captured.captured_queries if 'SELECT "conversations_creditaccount"."balance"' in q["sql"]
    ]
    assert len(balance_reads) == 1  # admit's: the early refusal reuses it
