"""Every upstream fault ends in a stored answer with its true status, an `error` frame and a `done` frame."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from conversations.models import CreditTransaction, Message
from conversations.services.billing import credits

pytestmark = [pytest.mark.django_db(transaction=True)]


FAULTS = [
    # marker, stored status, error code, partial text expected
    ("[[fault:status:400]]", "error", "bad_request", False),
    ("[[fault:context_too_long]]", "error", "context_too_long", False),
    ("[[fault:content_filter]]", "error", "content_filtered", False),
    ("[[fault:status:401]]", "error", "upstream_auth_failed", False),
    ("[[fault:status:403]]", "error", "upstream_access_denied", False),  # permission_denied_error, not quota
    ("[[fault:quota]]", "error", "upstream_quota_exceeded", False),
    ("[[fault:status:404]]", "error", "model_not_found", False),
    ("[[fault:status:429]]", "error", "upstream_rate_limited", False),
    ("[[fault:overloaded]]", "error", "upstream_overloaded", False),
    ("[[fault:status:500]]", "error", "upstream_server_error", False),
    ("[[fault:status:503]]", "error", "upstream_server_error", False),
    ("[[fault:html504]]", "error", "upstream_timeout", False),  # a gateway timeout page
    ("[[fault:acedata:invalid_token]]", "error", "upstream_auth_failed", False),
    ("[[fault:garbage]]", "error", "upstream_bad_response", False),
    ("[[fault:error_midstream]] [[tokens:30]]", "error", "upstream_server_error", True),
    ("[[fault:drop_midstream]] [[tokens:30]]", "interrupted", "upstream_interrupted", True),
    ("[[fault:no_done]] [[tokens:10]]", "interrupted", "upstream_interrupted", True),
]


@pytest.mark.parametrize("marker,status,code,partial", FAULTS, ids=[f[0] for f in FAULTS])
async def test_upstream_fault_is_stored_with_its_status(connect, owner, marker, status, code, partial):
    balance_before = await sync_to_async(credits.get_balance)(owner)
    tab = await connect(owner)
    await tab.say(f"please {marker}", model="kimi-k2-turbo-preview")
    done, frames = await tab.answer()
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == [code], errors
    assert errors[0]["message_id"] == done["message_id"]
    assert "sk-offline" not in str(frames)  # the API key never reaches a browser
    assert done["status"] == status and done["error"]["code"] == code
    [user_message, answer] = await sync_to_async(lambda: list(Message.objects.order_by("id")))()
    assert user_message.content == f"please {marker}"  # the user's message is never lost
    assert (answer.status, answer.error_code) == (status, code)
    assert answer.error_message == errors[0]["message"]
    streamed = "".join(f["content"] for f in frames if f["type"] == "delta")
    assert answer.content == streamed
    assert bool(answer.content) is partial
    balance_after = await sync_to_async(credits.get_balance)(owner)
    if partial:
        assert answer.usage_estimated or answer.completion_tokens > 0
        assert balance_after <= balance_before
    else:
        # A failed request costs nothing: the reservation was released in full.
        assert balance_after == balance_before
        assert answer.cost == 0


async def test_slow_first_token_past_the_read_timeout(connect, owner, settings):
    settings.KIMI_READ_TIMEOUT = 0.5
    tab = await connect(owner)
    await tab.say("wait [[fault:slow_first_token:3]]", model="kimi-k2-turbo-preview")
    done, frames = await tab.answer()
    assert done["status"] == "error" and done["error"]["code"] == "upstream_timeout"
    assert [f["code"] for f in frames if f["type"] == "error"] == ["upstream_timeout"]


async def test_an_endless_stream_is_cut_at_the_time_limit(connect, owner, settings):
    settings.KIMICHAT_GENERATION_TIME_LIMIT = 1.0
    tab = await connect(owner)
    await tab.say("go on forever [[fault:endless]] [[rate:200]]", model="kimi-k2-turbo-preview")
    done, frames = await tab.answer()
    assert done["status"] == "interrupted" and done["error"]["code"] == "time_limit"
    [answer] = await sync_to_async(lambda: list(Message.objects.filter(role="assistant")))()
    assert answer.content and answer.content == "".join(f["content"] for f in frames if f["type"] == "delta")


async def test_retry_before_the_first_byte_succeeds(connect, owner, settings, chat_settings):
    settings.KIMI_MAX_RETRIES = 3
    tab = await connect(owner)
    await tab.say("flaky [[fault:429_then_ok:2]] [[tokens:5]]", model="kimi-k2-turbo-preview")
    done, frames = await tab.answer()
    assert done["status"] == "complete"
    assert not [f for f in frames if f["type"] == "error"]
    assert chat_settings.chat_count == 3  # two 429s, then the answer


async def test_refused_connection(connect, owner, settings):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    settings.KIMI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    tab = await connect(owner)
    await tab.say("anyone there?", model=settings.KIMI_DEFAULT_MODEL)
    done, frames = await tab.answer()
    assert done["status"] == "error" and done["error"]["code"] == "upstream_connection_error"
    assert [f["retryable"] for f in frames if f["type"] == "error"] == [True]


async def test_insufficient_credits_refused_before_any_upstream_call(connect, owner, chat_settings):
    balance = await sync_to_async(credits.get_balance)(owner)
    await sync_to_async(credits.adjust)(owner, -balance, created_by=None, note="drain")
    tab = await connect(owner)
    await tab.say("hello [[tokens:3]]")
    error = await tab.recv()
    assert error["code"] == "insufficient_credits"
    assert error["balance"] == "0.000000" and error["estimated_cost"] == "1.000000"
    assert chat_settings.chat_count == 0
    assert await sync_to_async(Message.objects.count)() == 0
    assert await sync_to_async(CreditTransaction.objects.filter(kind="charge").count)() == 0
