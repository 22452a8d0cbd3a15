"""Every refused frame gets an `error` frame with a stable code, and nothing is stored."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True)]


async def totals() -> tuple[int, int]:
    return await sync_to_async(Conversation.objects.count)(), await sync_to_async(Message.objects.count)()


async def test_anonymous_socket_is_closed_with_4401(connect):
    tab, connected, code = await connect.raw(None)
    assert not connected and code == 4401


async def test_a_bad_session_cookie_is_anonymous(connect):
    tab, connected, code = await connect.raw(None, cookie="sessionid=not-a-session")
    assert not connected and code == 4401


async def test_foreign_origin_is_refused(connect, owner):
    tab, connected, _code = await connect.raw(owner, origin=(b"origin", b"https://evil.example"))
    assert not connected


async def test_binary_frames_close_the_socket(connect, owner):
    tab = await connect(owner)
    await tab.send_raw(data=b"\x00\x01")
    output = await tab.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4400}


@pytest.mark.parametrize(
    "raw,code,words",
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_json", "JSON object"),
        ('"send"', "bad_json", "JSON object"),
        ('{"type": "dance"}', "bad_frame", "Unknown frame type"),
        ('{"content": "x"}', "bad_frame", "'type'"),
        ('{"type": "send", "conversation_id": null, "content": 5, "client_msg_id": "%s"}', "bad_frame", "'content'"),
        ('{"type": "send", "content": "x", "client_msg_id": "%s"}', "bad_frame", "'conversation_id' is missing"),
        ('{"type": "send", "conversation_id": null, "content": "x", "client_msg_id": "nope"}', "bad_frame", "UUID"),
        (
            '{"type": "send", "conversation_id": "7", "content": "x", "client_msg_id": "%s"}',
            "bad_frame",
            "whole number",
        ),
        ('{"type": "send", "conversation_id": -3, "content": "x", "client_msg_id": "%s"}', "bad_frame", "positive"),
        (
            '{"type": "send", "conversation_id": true, "content": "x", "client_msg_id": "%s"}',
            "bad_frame",
            "whole number",
        ),
        (
            '{"type": "send", "conversation_id": null, "content": "   \\n\\t", "client_msg_id": "%s"}',
            "empty_message",
            "empty",
        ),
        ('{"type": "send", "conversation_id": null, "content": "", "client_msg_id": "%s"}', "empty_message", "empty"),
        (
            '{"type": "send", "conversation_id": null, "content": "x", "model": 12, "client_msg_id": "%s"}',
            "bad_frame",
            "'model'",
        ),
        ('{"type": "stop"}', "bad_frame", "'conversation_id'"),
        ('{"type": "subscribe", "conversation_id": 1, "after_seq": -1}', "bad_frame", "after_seq"),
    ],
)
async def test_malformed_frames_are_named_and_store_nothing(connect, owner, raw, code, words):
    tab = await connect(owner)
    await tab.send_raw(text=raw.replace("%s", str(uuid.uuid4())))
    error = await tab.recv()
    assert error["type"] == "error" and error["code"] == code, error
    assert words in error["message"]
    assert error["retryable"] is False
    assert await totals() == (0, 0)
    await tab.send(type="ping")
    assert (await tab.recv())["type"] == "pong"  # the socket stays usable


async def test_message_over_the_limit(connect, owner, settings):
    settings.KIMICHAT_MAX_MESSAGE_CHARS = 1000
    tab = await connect(owner)
    await tab.say("x" * 1001)
    error = await tab.recv()
    assert error["code"] == "message_too_long" and error["limit"] == 1000
    assert "1,001 characters" in error["message"]
    assert await totals() == (0, 0)


async def test_unknown_model(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("hi", model="gpt-9")
    error = await tab.recv()
    assert error["code"] == "unknown_model" and "gpt-9" in error["message"]
    assert await totals() == (0, 0)
    assert chat_settings.chat_count == 0


async def test_another_users_conversation_is_not_found_for_every_frame(connect, owner, outsider, chat_settings):
    theirs = await sync_to_async(Conversation.objects.create)(owner=outsider, model="kimi-k2.6", title="private")
    tab = await connect(owner)
    frames = [
        {"type": "send", "conversation_id": theirs.pk, "content": "hi", "client_msg_id": str(uuid.uuid4())},
        {"type": "stop", "conversation_id": theirs.pk},
        {"type": "subscribe", "conversation_id": theirs.pk},
        {"type": "regenerate", "conversation_id": theirs.pk, "client_msg_id": str(uuid.uuid4())},
        {
            "type": "edit",
            "conversation_id": theirs.pk,
            "message_id": 1,
            "content": "x",
            "client_msg_id": str(uuid.uuid4()),
        },
        {"type": "send", "conversation_id": 987654, "content": "hi", "client_msg_id": str(uuid.uuid4())},
    ]
    for frame in frames:
        await tab.send(**frame)
        error = await tab.recv()
        assert (error["type"], error["code"]) == ("error", "not_found"), frame
        assert "private" not in json.dumps(error)
    assert await totals() == (1, 0)
    assert chat_settings.chat_count == 0


async def test_a_second_send_while_streaming_is_refused(connect, owner):
    tab = await connect(owner)
    await tab.say("long [[tokens:300]] [[rate:100]]", model="kimi-k2-turbo-preview")
    first, _ = await tab.until_type("delta")
    await tab.say("interrupting", conversation_id=first["conversation_id"])
    error, _ = await tab.until_type("error")
    assert error["code"] == "busy" and error["retryable"] is True
    assert await sync_to_async(Message.objects.filter(role="user").count)() == 1
    await tab.send(type="stop", conversation_id=first["conversation_id"])
    await tab.answer()


async def test_per_user_cap_on_concurrent_answers(connect, owner, settings):
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 2
    tab = await connect(owner)
    for n in range(2):
        await tab.say(f"slow {n} [[tokens:300]] [[rate:50]]", model="kimi-k2-turbo-preview")
        await tab.until_type("delta")
    await tab.say("third [[tokens:3]]")
    error, _ = await tab.until_type("error")
    assert error["code"] == "too_many_answers" and error["limit"] == 2
    assert await sync_to_async(Conversation.objects.count)() == 2  # the refused send left no conversation behind
    for conversation_id in await sync_to_async(lambda: list(Conversation.objects.values_list("id", flat=True)))():
        await tab.send(type="stop", conversation_id=conversation_id)


async def test_a_message_larger_than_the_context_window_is_refused_before_upstream(
    connect, owner, chat_settings, settings
):
    settings.KIMICHAT_MAX_MESSAGE_CHARS = 2_000_000
    tab = await connect(owner)
    await tab.say("字" * 140_000, model="kimi-k2-0711-preview")  # ~140k tokens, the window is 128k
    error = await tab.recv()
    assert error["code"] == "context_too_long" and error["window"] == 131_072
    assert await totals() == (0, 0)
    assert chat_settings.chat_count == 0


async def test_invalid_conversation_settings_are_refused_before_upstream(connect, owner, chat_settings):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2.6", temperature=0.3)
    tab = await connect(owner)
    await tab.say("hi", conversation_id=conversation.pk)
    error = await tab.recv()
    assert error["code"] == "invalid_parameter" and "fixed temperature" in error["message"]
    assert await sync_to_async(Message.objects.count)() == 0
    assert chat_settings.chat_count == 0


async def test_too_many_bad_frames_close_the_socket(connect, owner):
    tab = await connect(owner)
    for _ in range(50):
        await tab.send_raw(text="nope")
        if (await tab.communicator.receive_output(timeout=5))["type"] == "websocket.close":
            break
    output = await tab.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4408}
