"""Sends that wait together are prepared together (services/chat/bulk_send.py), with prepare_send's rules.

Each test builds the same situation twice, for two sets of users: one set's sends go through ``prepare_sends`` as
one batch, the other's one by one through the socket's own path (``aprepare_send.func``: session, approval, rate
limit, ``prepare_send``). What they store and what they refuse must be the same. Real database, real sessions."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import (
    AccountSignup,
    Conversation,
    CreditAccount,
    CreditTransaction,
    GroupPolicy,
    Message,
    UserBudget,
    UserPreferences,
)
from conversations.services.accounts import sessions
from conversations.services.billing import credits, ratelimit
from conversations.services.chat import bulk_send, frames, sending

pytestmark = pytest.mark.django_db

MODEL = "kimi-k2.6"
OTHER = "moonshot-v1-8k"
KNOWN = [MODEL, OTHER]


def _session(user, backend="django.contrib.auth.backends.ModelBackend") -> str:
    session = SessionStore()
    session.update(
        {SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: backend, HASH_SESSION_KEY: user.get_session_auth_hash()}
    )
    session.create()
    return session.session_key


def _send(user, content, *, model=None, conversation=None, client_msg_id=None, session_key="") -> tuple:
    data = {
        "type": "send",
        "conversation_id": None,
        "content": content,
        "client_msg_id": str(client_msg_id or uuid.uuid4()),
    }
    if model:
        data["model"] = model
    if conversation is not None:
        data["conversation"] = conversation
    frame = frames.parse_frame(data)
    kwargs = {
        "session_key": _session(user) if session_key == "" else session_key,
        "language": "en",
        "conversation_id": None,
        "content": frame.content,
        "client_msg_id": frame.client_msg_id,
        "model": frame.model,
        "known_models": KNOWN,
        "new_conversation": frame.new_conversation,
        "attachments": frame.attachments,
    }
    return user, kwargs


def _together(sends) -> list:
    return bulk_send.prepare_sends([bulk_send.Pending(user, kwargs) for user, kwargs in sends])


def _one_by_one(sends) -> list:
    outcomes = []
    for user, kwargs in sends:
        try:
            outcomes.append(sending.aprepare_send.func(user, **kwargs))
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append(exc)
    return outcomes


CONVERSATION_FIELDS = (
    "model",
    "title",
    "system_prompt",
    "temperature",
    "top_p",
    "max_tokens",
    "json_mode",
    "thinking",
    "reasoning_effort",
    "web_search",
    "custom_instructions",
    "temporary",
    "project_id",
)
MESSAGE_FIELDS = (
    "role",
    "content",
    "status",
    "model",
    "seq",
    "finish_reason",
    "error_code",
    "superseded_by_id",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)
LEDGER_FIELDS = ("kind", "amount", "balance_after", "note", "model", "state", "api_key_id")


def _stored(user) -> dict:
    """Everything a user's sends stored, without ids and times."""
    conversations = []
    for conversation in Conversation.objects.filter(owner=user).order_by("id"):
        messages = []
        for message in conversation.messages.order_by("id"):
            row = {name: getattr(message, name) for name in MESSAGE_FIELDS}
            row["parent_is_previous"] = message.parent_id == (messages[-1]["id"] if messages else None)
            row["client_msg_id"] = message.client_msg_id is not None
            row["completed"] = message.completed_at is not None
            row["id"] = message.pk
            messages.append(row)
        for row in messages:
            del row["id"]
        conversations.append(
            {
                **{name: getattr(conversation, name) for name in CONVERSATION_FIELDS},
                "seen": conversation.temporary_seen_at is not None,
                "messages": messages,
            }
        )
    ledger = [
        {name: getattr(row, name) for name in LEDGER_FIELDS} | {"has_message": row.message_id is not None}
        for row in CreditTransaction.objects.filter(account__user=user).order_by("id")
    ]
    return {
        "conversations": conversations,
        "ledger": ledger,
        "balance": CreditAccount.objects.get(user=user).balance,
    }


def _outcome(outcome) -> dict:
    """An outcome as the socket would show it, without the ids that differ between the two sets of users."""
    if isinstance(outcome, sending.SendRefused):
        return {"refused": outcome.code, "message": outcome.message, "extra": outcome.extra, "retry": outcome.retryable}
    if isinstance(outcome, Exception):
        return {"raised": type(outcome).__name__}
    request = outcome.request
    return {
        "accepted": True,
        "created": outcome.created_conversation,
        "duplicate": outcome.duplicate,
        "question": outcome.user_message.content if outcome.user_message else None,
        "answer_status": outcome.assistant.status,
        "prompt_tokens": getattr(outcome.assistant, "prompt_tokens", None) if not outcome.duplicate else None,
        "request": None
        if request is None
        else {
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "model": request.model,
            "temperature": request.temperature,
            "tools": request.tools,
            "cache_key_names_the_chat": request.prompt_cache_key == f"kimichat-conversation-{outcome.conversation.pk}",
        },
        "reserved": None if outcome.reservation is None else (outcome.reservation.amount, outcome.reservation.model),
        "reservation_row_is_the_answers": outcome.reservation is None
        or CreditTransaction.objects.get(pk=outcome.reservation.transaction_id).message_id == outcome.assistant.pk,
    }


def _twice(make_users, build) -> tuple[list, list, list, list]:
    """``build(users)`` makes the sends for one set of users; run one set together and the other one by one."""
    batch_users, single_users = make_users("b"), make_users("s")
    batch_sends, single_sends = build(batch_users), build(single_users)
    together = _together(batch_sends)
    one_by_one = _one_by_one(single_sends)
    return together, one_by_one, batch_users, single_users


@pytest.fixture
def users(make_user):
    def make(prefix: str, count: int = 6):
        return [make_user(f"{prefix}{n}") for n in range(count)]

    return make


def test_a_batch_stores_what_one_by_one_stores(users, settings):
    def build(people):
        a, b, c, d, e, f = people
        UserPreferences.objects.create(user=b, about="I am a gardener.", answer_style="Short.")
        return [
            _send(a, "What is the capital of France?"),
            _send(b, "Plant a tree", model=OTHER),  # custom instructions join the prompt
            _send(c, "A temporary one", conversation={"temporary": True}),
            _send(
                d,
                "With settings",
                model=OTHER,
                conversation={"system_prompt": "Be terse.", "settings": {"temperature": 0.3}},
            ),
            _send(e, "Searching", conversation={"settings": {"web_search": True}}),
            _send(f, "x " * 5000),  # a long question: its title is cut
        ]

    together, one_by_one, batch_users, single_users = _twice(lambda p: users(p), build)
    assert [o for o in together if not isinstance(o, sending.Accepted)] == []
    assert [_outcome(o) for o in together] == [_outcome(o) for o in one_by_one]
    for batch_user, single_user in zip(batch_users, single_users, strict=True):
        assert _stored(batch_user) == _stored(single_user)


def test_a_batch_costs_the_same_statements_for_one_three_and_six_sends(users):
    """The point of the batch: its statements do not grow with its size (one by one, 21 a send). A send alone goes
    the same way, in a batch of one (the ORM's per-call work is less there: bench/sendpath.py)."""
    counts = []
    for prefix, size in (("w", 1), ("x", 3), ("y", 6)):
        sends = [_send(user, f"question {n}") for n, user in enumerate(users(prefix, size))]
        with CaptureQueriesContext(connection) as captured:
            outcomes = _together(sends)
        assert all(isinstance(o, sending.Accepted) for o in outcomes), outcomes
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1] == counts[2], counts
    assert counts[2] < 21 * 6 / 2, counts


@pytest.mark.parametrize("kind", ["plain", "custom instructions", "settings", "refused"])
def test_a_batch_of_one_stores_and_refuses_what_one_by_one_does(users, kind):
    def build(people):
        (person,) = people
        if kind == "custom instructions":
            UserPreferences.objects.create(user=person, about="I am a gardener.", answer_style="Short.")
        if kind == "refused":
            credits.adjust(person, -credits.get_balance(person), created_by=person, note="spent")
        conversation = {"system_prompt": "Be terse.", "settings": {"temperature": 0.3}} if kind == "settings" else {}
        return [_send(person, "Alone", model=OTHER, conversation=conversation)]

    together, one_by_one, batch_users, single_users = _twice(lambda p: users(p, 1), build)
    assert [_outcome(o) for o in together] == [_outcome(o) for o in one_by_one]
    assert isinstance(together[0], sending.SendRefused) == (kind == "refused")
    assert _stored(batch_users[0]) == _stored(single_users[0])


def test_refusals_are_the_same_in_a_batch(users, settings, make_user, monkeypatch):
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 1
    # The rate-limit refusal says how many seconds are left in the minute: both sets are refused at the same instant
    # of the same window (a real clock let the one-by-one set read one second less, or a new minute, now and then).
    frozen = time.time() // 60 * 60 + 1
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: frozen))
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 3, "per_hour": 100, "per_day": 100}]

    def build(people):
        ok, ended, waiting, poor, restricted, busy, capped, twice, limited, resent = people
        AccountSignup.objects.create(user=waiting, mode="approval", awaiting_approval=True)
        credits.adjust(poor, -credits.get_balance(poor), created_by=poor, note="spent")
        group = Group.objects.create(name=f"only-other-{ok.username}")
        GroupPolicy.objects.create(group=group, allowed_models=[OTHER])
        restricted.groups.add(group)
        running = Conversation.objects.create(owner=busy, model=MODEL, title="running")
        Message.objects.create(conversation=running, role="assistant", status="streaming", model=MODEL)
        UserBudget.objects.create(user=capped, daily_cap=Decimal("0.000001"))
        for _ in range(3):  # the minute's three requests used up
            sending.admit(limited)
        stored_id = uuid.uuid4()
        sending.prepare_send(
            resent, conversation_id=None, content="first", client_msg_id=stored_id, model=None, known_models=KNOWN
        )
        return [
            _send(ok, "fine"),
            _send(ended, "my session is gone", session_key="no-such-session"),
            _send(waiting, "not approved yet"),
            _send(poor, "no credits"),
            _send(restricted, "wrong model", model=MODEL),
            _send(busy, "one answer at a time"),
            _send(capped, "over my cap"),
            _send(twice, "first of two"),
            _send(twice, "second of two"),
            _send(limited, "over the rate limit"),
            _send(resent, "first", client_msg_id=stored_id),
            _send(ok, "unknown model", model="no-such-model"),
            _send(twice, "x " * 20_000, model=OTHER),  # can never fit its window
        ]

    together, one_by_one, batch_users, single_users = _twice(lambda p: users(p, 10), build)
    shown = [_outcome(o) for o in together]
    assert shown == [_outcome(o) for o in one_by_one]
    assert [o.get("refused") or o.get("raised") or "accepted" for o in shown] == [
        "accepted",
        "SessionEnded",
        "awaiting_approval",
        "insufficient_credits",
        "model_not_allowed",
        "too_many_answers",
        "daily_budget_exceeded",
        "accepted",
        "too_many_answers",
        "rate_limited",
        "accepted",  # the resend gets what was stored
        "unknown_model",
        "context_too_long",
    ]
    assert together[10].duplicate
    for batch_user, single_user in zip(batch_users, single_users, strict=True):
        assert _stored(batch_user) == _stored(single_user)


def test_a_batch_whose_transaction_fails_is_prepared_one_by_one(users):
    """Two users' sends with the same client_msg_id (a broken client): the batch's INSERT of the questions hits the
    unique constraint, the transaction rolls back whole, and each send goes alone, as it would have before."""
    same = uuid.uuid4()
    a, b, c = users("f", 3)
    outcomes = _together([_send(a, "one", client_msg_id=same), _send(b, "two", client_msg_id=same), _send(c, "three")])
    assert isinstance(outcomes[0], sending.Accepted) and isinstance(outcomes[2], sending.Accepted)
    assert isinstance(outcomes[1], sending.SendRefused) and outcomes[1].code == "bad_frame"
    assert Conversation.objects.filter(owner=b).count() == 0
    assert [Conversation.objects.filter(owner=u).count() for u in (a, c)] == [1, 1]
    assert CreditTransaction.objects.filter(account__user=a, kind="charge").count() == 1


# --- the sessions' check for many sockets --------------------------------------------------------------------------


def test_the_sessions_check_for_many_answers_as_the_check_for_one(make_user, settings):
    alice, bob, carol, dave, erin = (make_user(name) for name in ("alice", "bob", "carol", "dave", "erin"))
    valid = _session(alice)
    throttle = _session(alice, backend="conversations.services.accounts.backends.LoginThrottleBackend")
    expired = _session(bob)
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    inactive = _session(carol)
    type(carol).objects.filter(pk=carol.pk).update(is_active=False)
    changed = _session(dave)
    dave.set_password("another password entirely")
    dave.save()
    deleted = _session(erin)
    erin_id = erin.pk
    erin.delete()
    other_backend = SessionStore()
    other_backend.update({SESSION_KEY: str(alice.pk), BACKEND_SESSION_KEY: "x.NoSuchBackend", HASH_SESSION_KEY: "h"})
    other_backend.create()
    pairs = [
        (valid, alice.pk),
        (throttle, alice.pk),
        (valid, bob.pk),  # someone else's session
        (expired, bob.pk),
        (inactive, carol.pk),
        (changed, dave.pk),
        (deleted, erin_id),
        (other_backend.session_key, alice.pk),
        (None, alice.pk),
        ("", alice.pk),
        ("not-a-session-key-at-all", alice.pk),
    ]
    expected = [sessions.session_is_valid(key, user_id) for key, user_id in pairs]
    assert expected == [True, True] + [False] * 9
    assert sessions.valid_sessions(pairs) == expected
    with CaptureQueriesContext(connection) as captured:
        sessions.valid_sessions(pairs)
    assert len(captured.captured_queries) == 2


# --- through the sockets --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_new_chats_through_the_sockets_is_prepared_in_batches(connect, make_user, caplog):
    """Eight people press send at once: the first send goes alone, the others wait for it and go together; every
    answer streams to its own tab and is stored whole, each charged once."""
    from asgiref.sync import sync_to_async

    people = [await sync_to_async(make_user)(f"burst{n}") for n in range(8)]
    tabs = [await connect(person) for person in people]
    caplog.set_level("DEBUG", logger="conversations.services.chat.bulk_send")
    await asyncio.gather(*(tab.say(f"question {n} [[tokens:5]]") for n, tab in enumerate(tabs)))
    assert await asyncio.gather(*(tab.outcome() for tab in tabs)) == ["complete"] * 8
    sizes = [record.args[0] for record in caplog.records if record.msg.startswith("prepared together")]
    assert sizes and max(sizes) > 1, caplog.records

    def stored():
        return [
            (
                list(Message.objects.filter(conversation__owner=person).order_by("id").values_list("role", "status")),
                CreditTransaction.objects.filter(account__user=person, kind="charge", state="settled").count(),
                Conversation.objects.get(owner=person).title,
            )
            for person in people
        ]

    assert await sync_to_async(stored)() == [
        ([("user", "complete"), ("assistant", "complete")], 1, f"question {n} [[tokens:5]]") for n in range(8)
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_batch_that_fails_as_a_whole_fails_its_sends_only(connect, make_user, monkeypatch):
    """A batch whose preparation raises (its reads failed: the database went away, say) gives each of its sends the
    server's error frame, stores nothing, and the next sends are prepared as usual. (The failure is staged: a
    database that fails on cue cannot be.)"""
    from asgiref.sync import sync_to_async

    real = bulk_send.prepare_sends
    calls = []

    def fail_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(batch)

    monkeypatch.setattr(bulk_send, "prepare_sends", fail_once)
    people = [await sync_to_async(make_user)(f"fail{n}") for n in range(3)]
    tabs = [await connect(person) for person in people]
    assert await tabs[0].say("first [[tokens:3]]")
    assert await tabs[0].outcome() == "server_error"
    assert await sync_to_async(Conversation.objects.count)() == 0
    await asyncio.gather(*(tab.say(f"again {n} [[tokens:3]]") for n, tab in enumerate(tabs)))
    assert await asyncio.gather(*(tab.outcome() for tab in tabs)) == ["complete"] * 3
