"""The chat websocket against the real ASGI app and the offline Kimi server over loopback."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.kimi.configured import get_client
from conversations.kimi.params import ChatRequest
from conversations.models import Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True)]


def rows(model, **filters):
    return sync_to_async(lambda: list(model.objects.filter(**filters).order_by("id")))()


async def count(model, **filters) -> int:
    return await sync_to_async(model.objects.filter(**filters).count)()


def deltas_of(frames, message_id) -> tuple[str, str, list[int]]:
    pieces = [f for f in frames if f["type"] == "delta" and f["message_id"] == message_id]
    return "".join(f["content"] for f in pieces), "".join(f["reasoning"] for f in pieces), [f["seq"] for f in pieces]


async def upstream_answer(messages: list[dict], model: str) -> tuple[str, str]:
    """What the offline server answers to exactly these messages, asked directly (not streamed)."""
    result = await get_client().complete_chat(ChatRequest(model=model, messages=messages))
    return result.text, result.reasoning


async def test_a_full_turn_streams_and_stores_the_answer(connect, owner, chat_settings):
    tab = await connect(owner)
    client_msg_id = await tab.say("Tell me about Django [[tokens:40]]", model="kimi-k2-thinking")
    done, frames = await tab.answer()
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "conversation"
    conversation = frames[0]["conversation"]
    assert conversation["title"] == "Tell me about Django [[tokens:40]]"
    user_frame, placeholder = frames[1]["message"], frames[2]["message"]
    assert (user_frame["role"], user_frame["client_msg_id"]) == ("user", client_msg_id)
    assert (placeholder["role"], placeholder["status"]) == ("assistant", "streaming")
    content, reasoning, seqs = deltas_of(frames, placeholder["id"])
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2
    assert done["status"] == "complete" and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] > 0 and done["usage"]["prompt_tokens"] > 0
    assert done["usage"]["estimated"] is False
    assert done["balance"] is not None

    [user_row, answer] = await rows(Message, conversation_id=conversation["id"])
    assert (user_row.role, user_row.content, str(user_row.client_msg_id)) == (
        "user",
        "Tell me about Django [[tokens:40]]",
        client_msg_id,
    )
    assert answer.status == "complete" and answer.model == "kimi-k2-thinking"
    assert answer.content == content and answer.reasoning == reasoning and reasoning  # a thinking model thinks
    assert answer.total_tokens == done["usage"]["total_tokens"] == answer.prompt_tokens + answer.completion_tokens
    assert answer.upstream_request_id
    sent = chat_settings.last_request_body["messages"]
    expected = await upstream_answer(sent, "kimi-k2-thinking")
    assert (content, reasoning) == expected


async def test_multi_turn_sends_history_with_reasoning(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("first question [[tokens:10]]", model="kimi-k2-thinking")
    done, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    first_answer = done["message"]
    await tab.say("second question [[tokens:10]]", conversation_id=conversation_id)
    await tab.answer()
    sent = chat_settings.last_request_body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == first_answer["content"]
    assert sent[1]["reasoning_content"] == first_answer["reasoning"]  # thinking models get their reasoning back
    assert sent[2]["content"] == "second question [[tokens:10]]"


async def test_system_prompt_leads_the_history(connect, owner, chat_settings):
    conversation = await sync_to_async(Conversation.objects.create)(
        owner=owner, model="kimi-k2-turbo-preview", system_prompt="You are terse."
    )
    tab = await connect(owner)
    await tab.say("hi [[tokens:5]]", conversation_id=conversation.pk)
    await tab.answer()
    sent = chat_settings.last_request_body["messages"]
    assert sent[0] == {"role": "system", "content": "You are terse."}
    assert "reasoning_content" not in str(sent)


async def test_stop_mid_answer_keeps_the_partial_text(connect, owner):
    tab = await connect(owner)
    await tab.say("long one [[tokens:400]] [[rate:100]]", model="kimi-k2-turbo-preview")
    first_delta, frames = await tab.until_type("delta")
    conversation_id = first_delta["conversation_id"]
    await tab.send(type="stop", conversation_id=conversation_id)
    done, more = await tab.answer()
    content, _, _ = deltas_of(frames + more, first_delta["message_id"])
    assert done["status"] == "stopped"
    [answer] = await rows(Message, pk=first_delta["message_id"])
    assert answer.status == "stopped" and answer.content == content and 0 < len(content)
    assert answer.completion_tokens < 400 and answer.usage_estimated
    # Stopped before the end: the conversation takes a new send at once.
    await tab.say("again [[tokens:3]]", conversation_id=conversation_id)
    done, _ = await tab.answer()
    assert done["status"] == "complete"


async def test_closing_the_tab_does_not_stop_the_answer_and_a_new_tab_catches_up(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("keep going [[tokens:150]] [[rate:300]]", model="kimi-k2-thinking")
    first, before = await tab.until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
    message_id, conversation_id = first["message_id"], first["conversation_id"]
    await tab.close()

    await asyncio.sleep(0.1)
    other = await connect(owner)
    await other.send(type="subscribe", conversation_id=conversation_id)
    snapshot = None
    while snapshot is None:
        frame = await other.recv()
        if frame["type"] == "message" and frame["message"]["id"] == message_id:
            snapshot = frame["message"]
    assert snapshot["status"] == "streaming" and snapshot["seq"] >= 3
    done, rest = await other.answer()
    content, reasoning, seqs = deltas_of(rest, message_id)
    assert seqs == list(range(snapshot["seq"] + 1, done["message"]["seq"] + 1))  # no gap, no duplicate
    full_content = snapshot["content"] + content
    full_reasoning = snapshot["reasoning"] + reasoning
    [answer] = await rows(Message, pk=message_id)
    assert answer.status == "complete"
    assert (answer.content, answer.reasoning) == (full_content, full_reasoning)
    assert (full_content, full_reasoning) == await upstream_answer(
        chat_settings.last_request_body["messages"], "kimi-k2-thinking"
    )


async def test_two_tabs_receive_the_same_deltas(connect, owner):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2-turbo-preview")
    one, two = await connect(owner), await connect(owner)
    await two.send(type="subscribe", conversation_id=conversation.pk)
    await two.nothing()
    await one.say("shared [[tokens:60]] [[rate:600]]", conversation_id=conversation.pk)
    done_one, frames_one = await one.answer()
    done_two, frames_two = await two.answer()
    strip = [(f["seq"], f["content"]) for f in frames_one if f["type"] == "delta"]
    assert strip == [(f["seq"], f["content"]) for f in frames_two if f["type"] == "delta"]
    assert done_one["message"] == done_two["message"]
    # The second tab was told about the user message too.
    assert any(f["type"] == "message" and f["message"]["role"] == "user" for f in frames_two)


async def test_a_new_conversation_is_announced_to_the_users_other_tabs(connect, owner):
    one, two = await connect(owner), await connect(owner)
    await one.say("hello [[tokens:3]]")
    announced, _ = await two.until_type("conversation")
    assert announced["conversation"]["title"] == "hello [[tokens:3]]"


async def test_resend_with_the_same_client_msg_id_creates_nothing_new(connect, owner, chat_settings):
    tab = await connect(owner)
    client_msg_id = await tab.say("only once [[tokens:5]]")
    done, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    requests_before = chat_settings.chat_count
    again = await connect(owner)
    await again.say("only once [[tokens:5]]", client_msg_id=client_msg_id)  # conversation_id null, as at first
    user_echo, _ = await again.until(lambda f: f["type"] == "message" and f["message"]["role"] == "user")
    answer_echo, _ = await again.until(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
    assert user_echo["message"]["client_msg_id"] == client_msg_id
    assert answer_echo["message"]["id"] == done["message_id"] and answer_echo["message"]["status"] == "complete"
    assert await count(Conversation, owner=owner) == 1
    assert await count(Message, conversation_id=conversation_id) == 2
    assert chat_settings.chat_count == requests_before


async def test_concurrent_resends_of_one_id_store_one_message(connect, owner):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2-turbo-preview")
    one, two = await connect(owner), await connect(owner)
    key = str(uuid.uuid4())
    await asyncio.gather(
        one.say("twice [[tokens:5]]", conversation_id=conversation.pk, client_msg_id=key),
        two.say("twice [[tokens:5]]", conversation_id=conversation.pk, client_msg_id=key),
    )
    await one.until(lambda f: f["type"] in ("done", "message") and f.get("message", {}).get("role") == "assistant")
    await two.until(lambda f: f["type"] in ("done", "message") and f.get("message", {}).get("role") == "assistant")
    await asyncio.sleep(0.3)
    assert await count(Message, conversation=conversation, role="user") == 1
    assert await count(Message, conversation=conversation, role="assistant") == 1


async def test_regenerate_keeps_the_earlier_answer_as_a_version(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("pick a number [[tokens:8]]")
    first_done, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    await tab.send(type="regenerate", conversation_id=conversation_id, client_msg_id=str(uuid.uuid4()))
    second_done, frames = await tab.answer()
    assert second_done["status"] == "complete" and second_done["message_id"] != first_done["message_id"]
    replaced = [
        f["message"] for f in frames if f["type"] == "message" and f["message"]["id"] == first_done["message_id"]
    ]
    assert replaced and replaced[0]["superseded_by"] == second_done["message_id"]
    current = await sync_to_async(lambda: list(Message.objects.filter(conversation_id=conversation_id).current()))()
    assert [m.role for m in current] == ["user", "assistant"] and current[1].pk == second_done["message_id"]
    assert [m["role"] for m in chat_settings.last_request_body["messages"]] == ["user"]


async def test_edit_and_resend_replaces_the_last_turn(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("what is 2+2 [[tokens:5]]")
    first_done, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    user_id = frames[1]["message"]["id"]
    await tab.send(
        type="edit",
        conversation_id=conversation_id,
        message_id=user_id,
        content="what is 3+3 [[tokens:5]]",
        client_msg_id=str(uuid.uuid4()),
    )
    done, _ = await tab.answer()
    current = await sync_to_async(lambda: list(Message.objects.filter(conversation_id=conversation_id).current()))()
    assert [(m.role, m.content) for m in current][0] == ("user", "what is 3+3 [[tokens:5]]")
    assert current[1].pk == done["message_id"]
    old = await rows(Message, conversation_id=conversation_id, superseded_by__isnull=False)
    assert {m.pk for m in old} == {user_id, first_done["message_id"]}
    assert chat_settings.last_request_body["messages"] == [{"role": "user", "content": "what is 3+3 [[tokens:5]]"}]


async def test_no_database_write_per_delta(connect, owner, monkeypatch, settings):
    """A 500-token answer makes a constant handful of writes, not one per delta (counted in every thread)."""
    from django.db.backends import utils

    settings.KIMICHAT_COALESCE_MS = 0  # one frame per upstream piece: the worst case for per-delta costs
    settings.KIMICHAT_COALESCE_MAX_MS = 0  # not even under load
    writes: list[str] = []
    original = utils.CursorWrapper._execute

    def counting(self, sql, params, *ignored_wrappers):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(sql)
        return original(self, sql, params, *ignored_wrappers)

    tab = await connect(owner)
    monkeypatch.setattr(utils.CursorWrapper, "_execute", counting)
    await tab.say("a long answer please [[tokens:500]]", model="kimi-k2-turbo-preview")
    done, frames = await tab.answer()
    monkeypatch.undo()
    deltas = [f for f in frames if f["type"] == "delta"]
    assert done["status"] == "complete" and len(deltas) >= 100
    # conversation insert, user + assistant inserts, title/updated_at, credit charge + balance, the final update,
    # the settle refund/charge rows and balance, conversation bump: well under 20, and independent of the length.
    assert 4 <= len(writes) <= 20, writes  # at least the inserts were seen: the counter counts
    print(f"writes during a {len(deltas)}-frame answer: {len(writes)}")


async def test_checkpoints_save_the_partial_text_while_streaming(connect, owner, settings):
    settings.KIMICHAT_CHECKPOINT_SECONDS = 0.2
    tab = await connect(owner)
    await tab.say("slow [[tokens:200]] [[rate:100]]", model="kimi-k2-turbo-preview")
    first, _ = await tab.until_type("delta")
    await asyncio.sleep(0.8)
    [row] = await rows(Message, pk=first["message_id"])
    assert row.status == "streaming" and row.content and row.seq > 0
    await tab.send(type="stop", conversation_id=first["conversation_id"])
    await tab.answer()


async def test_a_full_turn_through_the_anthropic_format(connect, owner, chat_settings, settings):
    """KIMI_API_FORMAT=anthropic (kimi-k2.ai /messages, Moonshot /anthropic): same frames, same stored answer."""
    settings.KIMI_API_FORMAT = "anthropic"
    tab = await connect(owner)
    await tab.say("hello via messages [[tokens:12]]", model="kimi-k2-thinking")
    done, frames = await tab.answer()
    assert done["status"] == "complete" and done["finish_reason"] == "stop"
    content, reasoning, _ = deltas_of(frames, done["message_id"])
    assert content and reasoning
    assert chat_settings.log.last_chat.path.endswith("/messages")
    [answer] = await rows(Message, pk=done["message_id"])
    assert (answer.content, answer.reasoning) == (content, reasoning)
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


async def test_a_new_conversation_can_start_with_its_settings(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say(
        "hi [[tokens:4]]",
        model="kimi-k2-turbo-preview",
        conversation={"system_prompt": "Answer in French.", "settings": {"temperature": 0.2, "max_tokens": 300}},
    )
    done, frames = await tab.answer()
    assert frames[0]["conversation"]["system_prompt"] == "Answer in French."
    assert frames[0]["conversation"]["settings"]["temperature"] == 0.2
    sent = chat_settings.last_request_body
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert sent["temperature"] == 0.2 and sent["max_completion_tokens"] == 300  # Moonshot's field name


@pytest.mark.parametrize(
    "conversation,words",
    [
        ({"settings": {"temperature": 3}}, "Temperature must be from 0 to 1"),  # field: docs/websocket-protocol.md
        ({"title": "x"}, "only system_prompt, settings, custom_instructions, project and temporary"),
        ("cold", "must be an object"),
    ],
)
async def test_bad_new_conversation_settings_are_named(connect, owner, conversation, words):
    tab = await connect(owner)
    await tab.say("hi", conversation=conversation)
    error = await tab.recv()
    assert error["code"] == "bad_frame" and words in error["message"]
    assert await count(Conversation) == 0


async def test_settings_the_model_refuses_store_nothing(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("hi", model="kimi-k2.6", conversation={"settings": {"temperature": 0.3}})
    error = await tab.recv()
    assert error["code"] == "invalid_parameter" and "fixed temperature" in error["message"]
    assert await count(Conversation) == 0 and await count(Message) == 0
    assert chat_settings.chat_count == 0


async def test_a_done_that_comes_while_a_tab_joins_follows_its_snapshot(connect, owner, monkeypatch):
    """A tab subscribes while the answer ends: its snapshot (read from the database, so still "streaming") must not
    arrive after the ``done``, or the tab would show the answer as still being written. The relay hands frames to
    this process's sockets directly, so the consumer holds them back until its snapshots are out."""
    from conversations.consumers import chat as consumers

    one = await connect(owner)
    await one.say("ending soon [[tokens:30]] [[rate:150]]", model="kimi-k2-turbo-preview")
    first, _ = await one.until_type("delta")
    message_id, conversation_id = first["message_id"], first["conversation_id"]
    send_snapshot = consumers.ChatConsumer._send_snapshot

    async def late_snapshot(self, message):
        await asyncio.sleep(0.6)  # read from the database while the answer streams, sent after it has ended
        await send_snapshot(self, message)

    monkeypatch.setattr(consumers.ChatConsumer, "_send_snapshot", late_snapshot)
    two = await connect(owner)
    await two.send(type="subscribe", conversation_id=conversation_id)
    done, frames = await two.answer()
    snapshots = [f for f in frames if f["type"] == "message" and f["message"]["id"] == message_id]
    assert snapshots and snapshots[0]["message"]["status"] == "streaming"  # the read really was before the end
    assert frames[-1] is done and done["message"]["status"] == "complete"
    assert await two.nothing()
    await one.answer()
