"""Faults in process (the `connect` fixture): upstream streams that stall or never end, clients that drop, race and
resend, and a database that is briefly unavailable. Each test ends by checking that every user message is stored and
every answer has a final status, and that the credit ledger adds up (``assert_consistent``).

The upstream error statuses, mid-stream errors and drops, garbage, a missing [DONE], the read timeout and a refused
connection are in tests/test_ws_faults.py; real process kills, SIGTERM and a Redis restart in
tests/test_reliability_server.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from conversations.models import Conversation, Message
from conversations.services.billing import credits

pytestmark = [pytest.mark.django_db(transaction=True)]

FAST_MODEL = "kimi-k2-turbo-preview"  # no reasoning: content deltas only


def _consistency_problems() -> list[str]:
    problems = [f"ledger: {p.detail}" for p in credits.verify_ledger()]
    for message in Message.objects.order_by("id"):
        if message.role == "user" and message.status != "complete":
            problems.append(f"user message {message.pk} is {message.status}")
        if message.role == "assistant" and not message.is_final:
            problems.append(f"answer {message.pk} is still {message.status}")
    return problems


async def assert_consistent() -> None:
    assert await sync_to_async(_consistency_problems)() == []


def streamed(frames: list[dict], message_id: int) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "delta" and f["message_id"] == message_id)


async def stored(pk: int) -> Message:
    return await sync_to_async(Message.objects.get)(pk=pk)


# --- upstream ---------------------------------------------------------------------------------------------------


async def test_a_long_silence_mid_stream_within_the_read_timeout_is_fine(connect, owner, settings):
    settings.KIMI_READ_TIMEOUT = 5.0
    tab = await connect(owner)
    await tab.say("think a while [[fault:silence:2]] [[tokens:12]]", model=FAST_MODEL)
    done, frames = await tab.answer()
    assert done["status"] == "complete" and done["error"] is None
    assert not [f for f in frames if f["type"] == "error"]
    answer = await stored(done["message_id"])
    assert answer.content == streamed(frames, answer.pk) and answer.completion_tokens == 12
    await assert_consistent()


async def test_a_silence_past_the_read_timeout_keeps_the_partial_answer(connect, owner, settings):
    settings.KIMI_READ_TIMEOUT = 0.5
    tab = await connect(owner)
    await tab.say("stall [[fault:silence:3]] [[tokens:12]]", model=FAST_MODEL)
    done, frames = await tab.answer()
    assert done["error"]["code"] == "upstream_timeout" and done["status"] in ("error", "interrupted")
    answer = await stored(done["message_id"])
    assert answer.status == done["status"]
    assert answer.content and answer.content == streamed(frames, answer.pk)  # what was shown is what is kept
    await assert_consistent()


async def test_a_slow_first_token_within_the_read_timeout_is_fine(connect, owner, settings):
    settings.KIMI_READ_TIMEOUT = 5.0
    tab = await connect(owner)
    await tab.say("wait [[fault:slow_first_token:1.5]] [[tokens:5]]", model=FAST_MODEL)
    done, _ = await tab.answer()
    assert done["status"] == "complete"
    await assert_consistent()


async def test_an_endless_stream_stops_at_the_conversations_max_tokens(connect, owner, settings):
    settings.KIMICHAT_GENERATION_TIME_LIMIT = 3.0
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model=FAST_MODEL, max_tokens=30)
    tab = await connect(owner)
    await tab.say("go on forever [[fault:endless]] [[rate:500]]", conversation_id=conversation.pk)
    done, frames = await tab.answer()
    answer = await stored(done["message_id"])
    await assert_consistent()
    assert answer.content == streamed(frames, answer.pk)
    # 30 pieces of the offline answer; the time limit would let ~1,500 through.
    assert answer.completion_tokens <= 30 and done["finish_reason"] == "length", (
        answer.completion_tokens,
        done["status"],
        done["error"],
    )


async def test_a_failing_last_flush_still_stores_the_answer(connect, owner, monkeypatch):
    """The last flush (stream state + group_send: Redis when set) failing must not keep the answer from being stored:
    the whole text is in the worker's memory (found by the Redis-restart test, forced here)."""
    from conversations.services.chat.relay import Relayer

    real_close = Relayer.close

    async def close_then_fail(self, relay):
        await real_close(self, relay)
        raise ConnectionError("Redis went away during the last flush")

    monkeypatch.setattr(Relayer, "close", close_then_fail)
    tab = await connect(owner)
    await tab.say("all of it [[tokens:20]] [[rate:100]]", model=FAST_MODEL)
    first, frames = await tab.until_type("delta")
    for _ in range(50):
        answer = await stored(first["message_id"])
        if answer.is_final:
            break
        await asyncio.sleep(0.1)
    assert answer.is_final, answer.status  # stored at once, not left for the reaper
    assert answer.completion_tokens == 20 and answer.error_code != "worker_lost"
    await assert_consistent()


# --- client -----------------------------------------------------------------------------------------------------


async def test_two_tabs_sending_at_once_in_one_conversation_start_exactly_one_answer(connect, owner, chat_settings):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model=FAST_MODEL)
    one, two = await connect(owner), await connect(owner)
    await asyncio.gather(
        one.say("from tab one [[tokens:40]] [[rate:200]]", conversation_id=conversation.pk),
        two.say("from tab two [[tokens:40]] [[rate:200]]", conversation_id=conversation.pk),
    )
    first = [await one.until(lambda f: f["type"] in ("error", "message")), await two.until(
        lambda f: f["type"] in ("error", "message"))]  # fmt: skip
    kinds = sorted(frame["type"] for frame, _ in first)
    assert kinds == ["error", "message"], first
    [(refusal, _)] = [pair for pair in first if pair[0]["type"] == "error"]
    assert refusal["code"] == "busy" and refusal["retryable"] is True
    winner = one if first[0][0]["type"] == "message" else two
    done, _ = await winner.answer()
    assert done["status"] == "complete"
    assert await sync_to_async(Message.objects.filter(role="user").count)() == 1
    assert await sync_to_async(Message.objects.filter(role="assistant").count)() == 1
    assert chat_settings.chat_count == 1
    await assert_consistent()


async def test_two_tabs_sending_at_once_in_different_conversations_both_run(connect, owner):
    a = await sync_to_async(Conversation.objects.create)(owner=owner, model=FAST_MODEL)
    b = await sync_to_async(Conversation.objects.create)(owner=owner, model=FAST_MODEL)
    one, two = await connect(owner), await connect(owner)
    await asyncio.gather(
        one.say("in a [[tokens:30]] [[rate:300]]", conversation_id=a.pk),
        two.say("in b [[tokens:30]] [[rate:300]]", conversation_id=b.pk),
    )
    (done_one, _), (done_two, _) = await asyncio.gather(one.answer(), two.answer())
    assert {done_one["conversation_id"], done_two["conversation_id"]} == {a.pk, b.pk}
    assert done_one["status"] == done_two["status"] == "complete"
    await assert_consistent()


async def test_the_only_tab_closed_mid_answer_then_the_upstream_drops(connect, owner):
    tab = await connect(owner)
    await tab.say("nobody watching [[fault:drop_midstream]] [[tokens:30]] [[rate:20]]", model=FAST_MODEL)
    first, _ = await tab.until_type("delta")
    await tab.close()
    for _ in range(100):  # no socket is left to tell: the row is the only witness
        answer = await stored(first["message_id"])
        if answer.is_final:
            break
        await asyncio.sleep(0.1)
    assert (answer.status, answer.error_code) == ("interrupted", "upstream_interrupted")
    assert answer.content  # the pieces sent before the drop
    await assert_consistent()


async def test_resend_after_a_reconnect_mid_answer_attaches_to_the_running_answer(connect, owner, chat_settings):
    tab = await connect(owner)
    client_msg_id = str(uuid.uuid4())
    content = "resend me [[tokens:120]] [[rate:100]]"
    await tab.say(content, model=FAST_MODEL, client_msg_id=client_msg_id)
    first, _ = await tab.until(lambda f: f["type"] == "delta" and f["seq"] >= 2)
    await tab.close()  # the network dropped; the browser did not see whether its send arrived
    again = await connect(owner)
    await again.say(content, model=FAST_MODEL, client_msg_id=client_msg_id)  # conversation_id null, as at first
    snapshot, _ = await again.until(lambda f: f["type"] == "message" and f["message"]["id"] == first["message_id"])
    assert snapshot["message"]["status"] == "streaming" and snapshot["message"]["seq"] >= 2
    done, rest = await again.answer()
    seen = snapshot["message"]["content"] + "".join(
        f["content"] for f in rest if f["type"] == "delta" and f["seq"] > snapshot["message"]["seq"]
    )
    answer = await stored(first["message_id"])
    assert answer.status == "complete" and answer.content == seen  # no gap, no duplicate
    assert chat_settings.chat_count == 1  # the resend started nothing upstream
    assert await sync_to_async(Message.objects.count)() == 2
    await assert_consistent()


# --- the database, briefly unavailable ----------------------------------------------------------------------------

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="holds an exclusive SQLite lock (the PostgreSQL variant, pg_terminate_backend against a real worker, is "
    "in test_reliability_server.py)",
)


@pytest.fixture
def short_sqlite_timeout(monkeypatch):
    """Connections opened from now on wait 1 s for a lock instead of 20 (the app's thread reconnects per call)."""
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)


def _exclusive_lock() -> sqlite3.Connection:
    db = sqlite3.connect(connection.settings_dict["NAME"], timeout=5, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")
    return db


@sqlite_only
async def test_a_send_while_the_database_is_locked_is_refused_cleanly(connect, owner, short_sqlite_timeout):
    tab = await connect(owner)
    lock = await sync_to_async(_exclusive_lock, thread_sensitive=False)()
    try:
        await tab.say("during the outage [[tokens:5]]")
        error = await tab.recv(timeout=15)
    finally:
        lock.close()  # closing rolls back: the lock is gone
    assert (error["type"], error["code"], error["retryable"]) == ("error", "server_error", True)
    assert "nothing was saved" in error["message"]
    assert await sync_to_async(Conversation.objects.count)() == 0
    assert await sync_to_async(Message.objects.count)() == 0
    # The outage is over: the same send goes through.
    await tab.say("after the outage [[tokens:5]]")
    done, _ = await tab.answer()
    assert done["status"] == "complete"
    await assert_consistent()


@sqlite_only
async def test_the_final_store_is_retried_until_the_database_is_back(connect, owner, settings, short_sqlite_timeout):
    settings.KIMICHAT_CHECKPOINT_SECONDS = 60  # no checkpoint: the lock meets the final store only
    tab = await connect(owner)
    await tab.say("store me later [[tokens:20]] [[rate:40]]", model=FAST_MODEL)
    first, _ = await tab.until_type("delta")
    lock = await sync_to_async(_exclusive_lock, thread_sensitive=False)()
    await asyncio.sleep(2.5)  # the stream ends (~0.5 s) and the first store attempts fail on the lock
    assert (await stored(first["message_id"])).status == "streaming"  # nothing half-written meanwhile
    lock.close()
    done, frames = await tab.answer(timeout=30)
    assert done["status"] == "complete"
    answer = await stored(first["message_id"])
    assert answer.status == "complete" and answer.content == first["content"] + streamed(frames, answer.pk)
    await assert_consistent()


@sqlite_only
async def test_a_failed_checkpoint_does_not_end_a_healthy_answer(connect, owner, settings, short_sqlite_timeout):
    """A checkpoint is best-effort: one that meets the lock is skipped, and the answer goes on."""
    settings.KIMICHAT_CHECKPOINT_SECONDS = 0.2
    tab = await connect(owner)
    await tab.say("checkpoint through an outage [[tokens:60]] [[rate:40]]", model=FAST_MODEL)
    await tab.until_type("delta")
    lock = await sync_to_async(_exclusive_lock, thread_sensitive=False)()
    await asyncio.sleep(1.5)  # a checkpoint falls due and meets the lock
    lock.close()
    done, _ = await tab.answer(timeout=30)
    await assert_consistent()
    assert done["status"] == "complete", done["error"]
    assert (await stored(done["message_id"])).completion_tokens == 60
