"""Continue: an answer cut off by its output budget (or that only thought) goes on in place, through partial mode.

Real websocket, real database, the strict offline Kimi server on loopback.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, CreditTransaction, Message
from tests.test_ws_chat import deltas_of, rows, upstream_answer

pytestmark = [pytest.mark.django_db(transaction=True)]


async def conversation_of(owner, **fields) -> Conversation:
    return await sync_to_async(Conversation.objects.create)(owner=owner, **fields)


async def cut_off_answer(tab, conversation, text: str) -> dict:
    await tab.say(text, conversation_id=conversation.pk)
    done, _ = await tab.answer()
    return done["message"]


async def continue_answer(tab, answer: dict, client_msg_id: str | None = None) -> str:
    client_msg_id = client_msg_id or str(uuid.uuid4())
    await tab.send(
        type="continue",
        conversation_id=answer["conversation_id"],
        message_id=answer["id"],
        client_msg_id=client_msg_id,
    )
    return client_msg_id


async def test_an_answer_cut_off_by_its_budget_shows_it_and_continues_in_place(connect, owner, chat_settings):
    conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=20)
    tab = await connect(owner)
    first = await cut_off_answer(tab, conversation, "write a lot [[tokens:60]]")
    assert (first["status"], first["finish_reason"], first["cut_off"]) == ("complete", "length", "length")
    prefix, first_seq = first["content"], first["seq"]
    assert prefix and first_seq >= 1

    await continue_answer(tab, first)
    done, frames = await tab.answer()
    resumed = next(f["message"] for f in frames if f["type"] == "message" and f["message"]["id"] == first["id"])
    assert (resumed["status"], resumed["content"], resumed["seq"]) == ("streaming", prefix, first_seq)
    added, _, seqs = deltas_of(frames, first["id"])
    assert seqs == list(range(first_seq + 1, first_seq + 1 + len(seqs))) and seqs  # the seq stream goes on
    final = done["message"]
    assert (final["id"], final["status"], final["finish_reason"], final["cut_off"]) == (
        first["id"],
        "complete",
        "stop",
        None,
    )
    assert final["content"] == prefix + added and not added.startswith(prefix)  # the prefix is not repeated

    sent = chat_settings.last_request_body["messages"]
    assert sent[-1] == {"role": "assistant", "content": prefix, "partial": True}
    whole, _ = await upstream_answer(sent[:-1], "kimi-k2-turbo-preview")
    assert final["content"] == whole  # the two parts make the answer the model would have written at once

    # Usage and cost are the sums of both parts; the ledger holds a charge per part, both on this message.
    [stored] = await rows(Message, pk=first["id"])
    assert stored.seq == seqs[-1] and stored.content == final["content"]
    assert stored.prompt_tokens > first["usage"]["prompt_tokens"]
    assert (first["usage"]["completion_tokens"], stored.completion_tokens) == (20, 60)  # 60 pieces in two parts
    assert stored.total_tokens == stored.prompt_tokens + stored.completion_tokens
    charges = await rows(CreditTransaction, message_id=first["id"], kind="charge")
    assert len(charges) == 2 and not any(c.note.startswith("reserved") for c in charges)
    ledger = await rows(CreditTransaction, message_id=first["id"])
    assert stored.cost == -sum((row.amount for row in ledger), Decimal(0)) > Decimal(first["cost"]) > 0
    # Only one user message and one answer: nothing new was stored.
    assert await sync_to_async(Message.objects.filter(conversation=conversation).count)() == 2


async def test_an_answer_that_only_thought_is_marked_and_continues(connect, owner, chat_settings):
    conversation = await conversation_of(owner, model="kimi-k2.6", max_tokens=8)
    tab = await connect(owner)
    first = await cut_off_answer(tab, conversation, "think hard [[tokens:30]]")
    assert first["content"] == "" and first["reasoning"]
    assert (first["status"], first["finish_reason"], first["cut_off"]) == ("complete", "length", "reasoning_only")

    await continue_answer(tab, first)
    done, frames = await tab.answer()
    final = done["message"]
    assert final["id"] == first["id"] and final["status"] == "complete" and final["content"]
    assert final["reasoning"].startswith(first["reasoning"] + "\n\n")  # thought again, after what it thought
    # Partial mode needs text to continue: with none, the question is asked again with room to answer.
    sent = chat_settings.last_request_body
    assert sent["messages"][-1]["role"] == "user" and sent["max_completion_tokens"] > 8
    assert final["usage"]["completion_tokens"] > first["usage"]["completion_tokens"]


async def test_continue_is_refused_where_it_cannot_apply(connect, owner, outsider, chat_settings):
    conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=10)
    tab = await connect(owner)
    cut = await cut_off_answer(tab, conversation, "long [[tokens:40]]")
    await sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(max_tokens=None)
    whole = await cut_off_answer(tab, conversation, "short [[tokens:3]]")
    assert whole["cut_off"] is None

    await continue_answer(tab, cut)  # no longer the last answer
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "not_found" and refused["conversation_id"] == conversation.pk
    await continue_answer(tab, whole)  # complete, not cut off
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "not_continuable"

    stranger = await connect(outsider)
    await continue_answer(stranger, whole)
    refused, _ = await stranger.until_type("error")
    assert refused["code"] == "not_found"

    json_conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=10, json_mode=True)
    cut_json = await cut_off_answer(tab, json_conversation, "json please [[tokens:40]]")
    assert cut_json["cut_off"] == "length"
    await continue_answer(tab, cut_json)
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "invalid_parameter" and "JSON" in refused["message"]
    [stored] = await rows(Message, pk=cut_json["id"])
    assert (stored.status, stored.finish_reason, stored.content) == ("complete", "length", cut_json["content"])

    await tab.send(type="continue", conversation_id=conversation.pk, message_id="x", client_msg_id=str(uuid.uuid4()))
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "bad_frame" and "message_id" in refused["message"]


async def test_a_resent_continue_runs_once(connect, owner, chat_settings):
    conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=10)
    tab = await connect(owner)
    first = await cut_off_answer(tab, conversation, "long [[tokens:30]]")
    client_msg_id = await continue_answer(tab, first)
    done, _ = await tab.answer()
    requests = chat_settings.chat_count
    await continue_answer(tab, first, client_msg_id)  # a resend after a reconnect
    snapshot, _ = await tab.until(lambda f: f["type"] == "message" and f["message"]["id"] == first["id"])
    assert snapshot["message"]["content"] == done["message"]["content"]
    assert chat_settings.chat_count == requests


async def test_a_tab_that_joins_during_a_continuation_gets_the_whole_text_and_no_gap(connect, owner, chat_settings):
    conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=15)
    tab = await connect(owner)
    first = await cut_off_answer(tab, conversation, "long [[tokens:300]] [[rate:100]]")
    await continue_answer(tab, first)
    await tab.until(lambda f: f["type"] == "delta" and f["seq"] >= first["seq"] + 3)

    late = await connect(owner)
    await late.send(type="subscribe", conversation_id=conversation.pk)
    snapshot, _ = await late.until(lambda f: f["type"] == "message" and f["message"]["id"] == first["id"])
    snapshot = snapshot["message"]
    assert snapshot["status"] == "streaming" and snapshot["seq"] >= first["seq"] + 3
    assert snapshot["content"].startswith(first["content"]) and len(snapshot["content"]) > len(first["content"])
    done, frames = await late.answer()
    added, _, seqs = deltas_of(frames, first["id"])
    assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))
    assert done["message"]["content"] == snapshot["content"] + added


async def test_a_continuation_stopped_before_it_adds_anything_leaves_the_answer_as_it_was(
    connect, owner, chat_settings
):
    conversation = await conversation_of(owner, model="kimi-k2-turbo-preview", max_tokens=10)
    tab = await connect(owner)
    first = await cut_off_answer(tab, conversation, "long [[tokens:30]] [[fault:slow_first_token:2]]")
    await continue_answer(tab, first)
    await tab.until(lambda f: f["type"] == "message" and f["message"]["status"] == "streaming")
    await tab.send(type="stop", conversation_id=conversation.pk)
    done, _ = await tab.answer()
    final = done["message"]
    assert (final["status"], final["finish_reason"], final["cut_off"], final["error"]) == (
        "complete",
        "length",
        "length",
        None,
    )
    assert (final["content"], final["cost"], final["usage"]) == (first["content"], first["cost"], first["usage"])
    ledger = await rows(CreditTransaction, message_id=first["id"])
    assert sum((row.amount for row in ledger), Decimal(0)) == -Decimal(first["cost"])  # the second part was free


def test_a_continued_answer_gets_the_reapers_grace_from_when_it_resumed(owner):
    from django.utils import timezone

    from conversations.services.chat.reaper import in_progress_ids

    conversation = Conversation.objects.create(owner=owner, model="kimi-k2-turbo-preview")
    long_ago = timezone.now() - timezone.timedelta(hours=1)
    resumed = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        created_at=long_ago,
        completed_at=timezone.now(),
    )
    orphan = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", created_at=long_ago
    )
    assert in_progress_ids(60) == [orphan.pk]
    assert sorted(in_progress_ids(0)) == sorted([orphan.pk, resumed.pk])


async def test_continue_is_refused_on_a_gateway_without_partial_mode(connect, owner, chat_settings, settings):
    settings.KIMI_PROVIDER = "acedata"  # Ace Data does not document partial mode: refused here, nothing sent
    conversation = await conversation_of(owner, model="kimi-k2.6")  # the default model: always offered
    await sync_to_async(Message.objects.create)(conversation=conversation, role="user", content="go", status="complete")
    cut = await sync_to_async(Message.objects.create)(
        conversation=conversation,
        role="assistant",
        content="half of it",
        status="complete",
        finish_reason="length",
        model="kimi-k2.6",
    )
    tab = await connect(owner)
    requests = chat_settings.chat_count
    await continue_answer(tab, {"id": cut.pk, "conversation_id": conversation.pk})
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "invalid_parameter" and "provider" in refused["message"]
    assert chat_settings.chat_count == requests
    [stored] = await rows(Message, pk=cut.pk)
    assert (stored.status, stored.finish_reason, stored.content) == ("complete", "length", "half of it")
