"""The Kimi client driven against the offline server over real loopback sockets: every quirk, every fault."""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from decimal import Decimal

import httpx
import pytest
from asgiref.sync import sync_to_async

from conversations.kimi import errors, provider_state
from conversations.kimi.client import KimiClient, close_client, shared_http_client
from conversations.kimi.configured import get_client
from conversations.kimi.error_mapping import error_from_response, parse_retry_after
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta, ResponseMeta, Usage
from conversations.kimi.openai_format import StreamParser
from conversations.kimi.params import ChatRequest
from conversations.kimi.sse import SSEEvent
from conversations.kimi.tokens import estimate_messages_locally
from conversations.models import ProviderSnapshot

QUIRKS = ["crlf", "cr", "nospace", "multiline", "comments", "split_utf8", "empty_choices"]


def ask(text: str, model: str = "kimi-k2", **options) -> ChatRequest:
    return ChatRequest(model, [{"role": "user", "content": text}], **options)


async def collect(client: KimiClient, request: ChatRequest) -> list:
    return [event async for event in client.stream_chat(request)]


def joined(events, kind) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


async def test_stream_yields_meta_first_then_pieces_finish_and_usage_once(make_kimi_client, offline_kimi):
    events = await collect(make_kimi_client(), ask("Explain caching", model="kimi-k2-thinking"))
    record = offline_kimi.log.last_chat
    assert isinstance(events[0], ResponseMeta)
    assert events[0].request_id == record.headers.get("x-request-id", events[0].request_id)
    assert events[0].rate_limit.keys() == {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    assert events[0].credits_remaining.isdigit()
    kinds = [type(e) for e in events[1:]]
    first_content = kinds.index(ContentDelta)
    assert set(kinds[:first_content]) == {ReasoningDelta}  # reasoning streams before content
    assert kinds[-2:] == [Finish, Usage] and kinds.count(Usage) == 1
    assert joined(events, ContentDelta) == record.sent_text and "## " in record.sent_text
    assert joined(events, ReasoningDelta) == record.sent_reasoning and record.sent_reasoning
    assert events[-2] == Finish("stop")
    prompt = estimate_messages_locally(record.body["messages"])
    pieces = sum(isinstance(e, (ContentDelta, ReasoningDelta)) for e in events)
    assert events[-1] == Usage(prompt, pieces, prompt + pieces, 0)
    assert record.body["stream"] is True and record.body["stream_options"] == {"include_usage": True}
    assert record.headers["authorization"] == f"Bearer {offline_kimi.api_key}"


@pytest.mark.parametrize("quirk", QUIRKS)
async def test_every_framing_quirk_gives_the_exact_answer(make_kimi_client, offline_kimi, quirk):
    events = await collect(
        make_kimi_client(), ask(f"Tell me about unicode 你好 [[tokens:80]] [[fault:{quirk}]]", model="kimi-k2.6")
    )
    record = offline_kimi.log.last_chat
    assert record.completed
    assert joined(events, ContentDelta) == record.sent_text
    assert joined(events, ReasoningDelta) == record.sent_reasoning != ""
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop")]
    usages = [e for e in events if isinstance(e, Usage)]
    pieces = sum(isinstance(e, (ContentDelta, ReasoningDelta)) for e in events)
    assert len(usages) == 1 and usages[0].completion_tokens == pieces


async def test_several_quirks_at_once(make_kimi_client, offline_kimi):
    request = ask(
        "你好 " * 5 + " [[tokens:60]] [[fault:split_utf8]] [[fault:multiline]] [[fault:comments]] [[fault:cr]]"
    )
    events = await collect(make_kimi_client(), request)
    assert joined(events, ContentDelta) == offline_kimi.log.last_chat.sent_text


async def test_fault_header_is_honoured(offline_kimi):
    # The header form of a directive: the client has no option for custom headers, so speak to the server directly.
    async with httpx.AsyncClient() as http:
        response = await http.post(
            offline_kimi.base_url + "/chat/completions",
            json={"model": "kimi-k2", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {offline_kimi.api_key}", "X-Offline-Fault": "status:503"},
        )
    assert response.status_code == 503


async def test_echo_returns_exactly_the_user_text(make_kimi_client):
    payload = '<script>alert("x")</script> **bold** `code` 中文 & <img src=x onerror=alert(1)>'
    events = await collect(make_kimi_client(), ask(f"[[echo]] {payload}"))
    assert joined(events, ContentDelta) == payload


async def test_tokens_directive_gives_a_500_piece_answer(make_kimi_client):
    events = await collect(make_kimi_client(), ask("long please [[tokens:500]]"))
    assert sum(isinstance(e, ContentDelta) for e in events) == 500
    assert events[-1].completion_tokens == 500


async def test_max_tokens_cuts_with_finish_length(make_kimi_client, offline_kimi):
    events = await collect(make_kimi_client(), ask("hello", max_tokens=7))
    assert sum(isinstance(e, ContentDelta) for e in events) == 7
    assert Finish("length") in events
    assert offline_kimi.last_request_body["max_completion_tokens"] == 7  # Moonshot's name [notes §3]


async def test_thinking_off_for_k26_streams_no_reasoning(make_kimi_client, offline_kimi):
    events = await collect(make_kimi_client(), ask("hello", model="kimi-k2.6", thinking=False))
    assert joined(events, ReasoningDelta) == ""
    assert joined(events, ContentDelta)
    assert offline_kimi.last_request_body["thinking"] == {"type": "disabled"}


async def test_answers_are_deterministic_per_prompt(make_kimi_client):
    client = make_kimi_client()
    first = joined(await collect(client, ask("same prompt")), ContentDelta)
    again = joined(await collect(client, ask("same prompt")), ContentDelta)
    other = joined(await collect(client, ask("another prompt entirely")), ContentDelta)
    assert first == again != other


def test_usage_from_choices_is_added_once_and_top_level_wins():
    parser = StreamParser()
    for index, completion in ((0, 5), (1, 7)):
        usage = {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}
        choice = {"index": index, "delta": {}, "finish_reason": "stop", "usage": usage}
        parser.feed(SSEEvent(json.dumps({"choices": [choice]})))
    assert parser.usage() == Usage(10, 12, 22, 0)  # the prompt counted once, completions added
    top = {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22, "cached_tokens": 4}
    parser.feed(SSEEvent(json.dumps({"choices": [], "usage": top})))
    assert parser.usage() == Usage(10, 12, 22, 4)


# --- errors before the stream --------------------------------------------------------------------------------------

NOT_RETRIED = [
    ("status:400", errors.BadRequest, "bad_request", 400),
    ("context_too_long", errors.ContextTooLong, "context_too_long", 400),
    ("content_filter", errors.ContentFiltered, "content_filtered", 400),
    ("status:401", errors.AuthenticationFailed, "upstream_auth_failed", 401),
    # Moonshot's 403 is permission_denied_error ("The API you are accessing is not open"), not a balance problem.
    ("status:403", errors.AccessDenied, "upstream_access_denied", 403),
    ("quota", errors.PermissionDenied, "upstream_quota_exceeded", 429),
    ("status:404", errors.ModelNotFound, "model_not_found", 404),
    ("acedata:token_mismatched", errors.BadRequest, "bad_request", 400),
    ("acedata:invalid_token", errors.AuthenticationFailed, "upstream_auth_failed", 401),
    ("acedata:used_up", errors.PermissionDenied, "upstream_quota_exceeded", 403),
]
RETRIED = [
    ("status:500", errors.ServerError, "upstream_server_error", 500),
    ("status:503", errors.ServerError, "upstream_server_error", 503),
    ("overloaded", errors.Overloaded, "upstream_overloaded", 429),
    ("html504", errors.Timeout, "upstream_timeout", 504),
    ("acedata:api_error", errors.ServerError, "upstream_server_error", 500),
    ("acedata:too_many_requests", errors.RateLimited, "upstream_rate_limited", 429),
]


@pytest.mark.parametrize(("fault", "exc_class", "code", "status"), NOT_RETRIED)
async def test_client_errors_are_mapped_and_never_retried(
    make_kimi_client, offline_kimi, fault, exc_class, code, status
):
    with pytest.raises(exc_class) as caught:
        await collect(make_kimi_client(), ask(f"hi [[fault:{fault}]]"))
    assert type(caught.value) is exc_class
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (code, status, False)
    assert caught.value.message == exc_class.default_message
    assert offline_kimi.chat_count == 1


@pytest.mark.parametrize(("fault", "exc_class", "code", "status"), RETRIED)
async def test_provider_trouble_is_retried_then_reported(
    make_kimi_client, offline_kimi, fault, exc_class, code, status
):
    with pytest.raises(exc_class) as caught:
        await collect(make_kimi_client(max_retries=2), ask(f"hi [[fault:{fault}]]"))
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (code, status, True)
    assert offline_kimi.chat_count == 3  # the first attempt and two retries


async def test_rate_limit_honours_retry_after(make_kimi_client, offline_kimi):
    started = time.monotonic()
    with pytest.raises(errors.RateLimited) as caught:
        await collect(make_kimi_client(max_retries=1), ask("hi [[fault:status:429]]"))
    assert caught.value.retry_after == 1.0
    assert offline_kimi.chat_count == 2
    assert time.monotonic() - started >= 1.0  # waited the server's Retry-After, not the millisecond backoff


async def test_retry_after_beyond_the_time_budget_gives_up_at_once(make_kimi_client, offline_kimi):
    with pytest.raises(errors.RateLimited):
        await collect(make_kimi_client(retry_max_wait=0.5), ask("hi [[fault:status:429]]"))
    assert offline_kimi.chat_count == 1


async def test_429_then_ok_is_retried_until_it_succeeds(make_kimi_client, offline_kimi):
    events = await collect(make_kimi_client(), ask("flaky [[fault:429_then_ok:2]]"))
    assert offline_kimi.chat_count == 3
    assert [r.status for r in offline_kimi.log.chat_requests] == [429, 429, 200]
    assert joined(events, ContentDelta) == offline_kimi.log.last_chat.sent_text != ""


async def test_retries_are_bounded_in_count(make_kimi_client, offline_kimi):
    with pytest.raises(errors.RateLimited):
        await collect(make_kimi_client(max_retries=3), ask("flaky [[fault:429_then_ok:9]]"))
    assert offline_kimi.chat_count == 4


async def test_unknown_model_is_a_real_404(make_kimi_client, offline_kimi):
    with pytest.raises(errors.ModelNotFound):
        await collect(make_kimi_client(), ask("hi", model="kimi-k1-retired"))
    assert offline_kimi.chat_count == 1


async def test_invalid_parameters_never_reach_the_server(make_kimi_client, offline_kimi):
    with pytest.raises(errors.InvalidParameter):
        await collect(make_kimi_client(), ask("hi", temperature=1.5))
    with pytest.raises(errors.InvalidParameter):
        await make_kimi_client().complete_chat(ask("hi", model="kimi-k3", thinking=False))
    assert offline_kimi.chat_count == 0


async def test_connection_refused_is_a_connection_error(make_kimi_client):
    with socket_port() as port:
        client = make_kimi_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(errors.ConnectionFailed) as caught:
        await collect(client, ask("hi"))
    assert caught.value.retryable


@contextlib.contextmanager
def socket_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()  # nothing listens there afterwards


# --- failures after the first byte: kept partial, never retried ------------------------------------------------------


async def test_error_midstream_keeps_the_partial_text_and_is_not_retried(make_kimi_client, offline_kimi):
    seen = []
    with pytest.raises(errors.ServerError) as caught:
        async for event in make_kimi_client().stream_chat(ask("hi [[fault:error_midstream]]", model="kimi-k2.6")):
            seen.append(event)
    record = offline_kimi.log.last_chat
    assert caught.value.partial_text == record.sent_text == joined(seen, ContentDelta) != ""
    assert caught.value.partial_reasoning == record.sent_reasoning != ""
    assert caught.value.request_id == seen[0].request_id
    assert offline_kimi.chat_count == 1  # retryable kind, but content had arrived


async def test_drop_midstream_is_interrupted_and_not_retried(make_kimi_client, offline_kimi):
    with pytest.raises(errors.Interrupted) as caught:
        await collect(make_kimi_client(), ask("hi [[fault:drop_midstream]]"))
    assert caught.value.code == "upstream_interrupted"
    assert caught.value.partial_text == offline_kimi.log.last_chat.sent_text != ""
    assert offline_kimi.chat_count == 1


async def test_stream_without_done_is_interrupted_even_after_finish_and_usage(make_kimi_client, offline_kimi):
    seen = []
    with pytest.raises(errors.Interrupted) as caught:
        async for event in make_kimi_client().stream_chat(ask("hi [[fault:no_done]]")):
            seen.append(event)
    assert Finish("stop") in seen and not any(isinstance(e, Usage) for e in seen)
    assert caught.value.partial_text == offline_kimi.log.last_chat.sent_text
    assert caught.value.usage is not None and caught.value.usage.completion_tokens > 0
    assert offline_kimi.chat_count == 1


async def test_garbage_is_a_bad_response(make_kimi_client, offline_kimi):
    with pytest.raises(errors.BadResponse) as caught:
        await collect(make_kimi_client(), ask("hi [[fault:garbage]]"))
    assert caught.value.code == "upstream_bad_response"
    assert offline_kimi.chat_count == 1


async def test_slow_first_token_and_silence_are_waited_out(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    for fault in ("slow_first_token:0.3", "silence:0.3"):
        started = time.monotonic()
        events = await collect(client, ask(f"hi [[fault:{fault}]]"))
        assert time.monotonic() - started >= 0.3
        assert joined(events, ContentDelta) == offline_kimi.log.last_chat.sent_text


async def test_read_timeout_after_the_answer_started_is_not_retried(make_kimi_client, offline_kimi):
    with pytest.raises(errors.Timeout) as caught:
        await collect(make_kimi_client(read_timeout=0.2), ask("hi [[fault:silence:1]]"))
    assert caught.value.partial_text == offline_kimi.log.last_chat.sent_text != ""
    assert offline_kimi.chat_count == 1


async def wait_for_disconnect(offline_kimi) -> bool:
    for _ in range(200):
        if offline_kimi.log.last_chat.disconnected:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_leaving_the_stream_early_closes_the_connection(make_kimi_client, offline_kimi):
    received = 0
    async with contextlib.aclosing(make_kimi_client().stream_chat(ask("go [[fault:endless]] [[rate:500]]"))) as events:
        async for event in events:
            received += isinstance(event, ContentDelta)
            if received == 20:
                break
    assert await wait_for_disconnect(offline_kimi)
    assert not offline_kimi.log.last_chat.completed


async def test_cancelling_the_consumer_task_closes_the_connection(make_kimi_client, offline_kimi):
    first = asyncio.Event()

    async def consume():
        async for event in make_kimi_client().stream_chat(ask("go [[fault:endless]] [[rate:500]]")):
            if isinstance(event, ContentDelta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_for_disconnect(offline_kimi)


# --- the key never leaks ------------------------------------------------------------------------------------------


async def test_a_wrong_key_is_reported_without_the_key(make_kimi_client, offline_kimi, caplog):
    wrong = "sk-wrong-key-abcdef123456"
    client = make_kimi_client(api_key=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.AuthenticationFailed) as caught:
        await collect(client, ask("hi"))
    exc = caught.value
    for text in (str(exc), repr(exc), exc.message, exc.detail, repr(client), caplog.text):
        assert wrong not in text and offline_kimi.api_key not in text
    assert offline_kimi.chat_count == 1


def test_provider_messages_quoting_a_key_are_redacted():
    body = {"error": {"type": "invalid_authentication_error", "message": "Incorrect API key provided: sk-abc123def456"}}
    exc = error_from_response(401, body, {})
    assert "sk-abc123def456" not in exc.detail and "[redacted]" in exc.detail


# --- error mapping (pure) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "exc_class"),
    [
        (400, {"error": {"type": "invalid_request_error", "message": "Invalid request: bad"}}, errors.BadRequest),
        (400, {"error": {"type": "invalid_request_error", "message": "exceeded model token limit: 8192"}},
         errors.ContextTooLong),
        (400, {"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}},
         errors.ContextTooLong),
        (400, {"error": {"type": "content_filter", "message": "high risk"}}, errors.ContentFiltered),
        (401, {"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}},
         errors.AuthenticationFailed),
        (403, {"error": {"message": "no", "type": "insufficient_quota", "code": "insufficient_credits"}},
         errors.PermissionDenied),
        (429, {"error": {"type": "exceeded_current_quota_error", "message": "suspended"}}, errors.PermissionDenied),
        (429, {"error": {"type": "engine_overloaded_error", "message": "busy"}}, errors.Overloaded),
        (429, {"error": {"type": "rate_limit_reached_error", "message": "slow"}}, errors.RateLimited),
        (429, {"error": {"message": "x", "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
         errors.RateLimited),
        (404, {"error": {"message": "x", "type": "invalid_request_error", "code": "model_not_found"}},
         errors.ModelNotFound),
        (500, {"error": {"code": "api_error", "message": "boom"}, "trace_id": "t-1"}, errors.ServerError),
        (504, b"<html><body>504 Gateway Time-out</body></html>", errors.Timeout),
        (502, b"", errors.ServerError),
        (418, b"", errors.BadRequest),
        (None, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, errors.Overloaded),
        (None, {"error": {"message": "?"}}, errors.ServerError),
    ],
)  # fmt: skip
def test_error_bodies_of_every_provider_map_once(status, body, exc_class):
    exc = error_from_response(status, body, {"Msh-Request-Id": "req-1"})
    assert type(exc) is exc_class
    assert exc.request_id == "req-1"


def test_trace_id_is_the_request_id_when_no_header_and_retry_after_forms():
    exc = error_from_response(500, {"error": {"code": "api_error", "message": "boom"}, "trace_id": "t-9"}, {})
    assert exc.request_id == "t-9"
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({}, "please try again after 7 seconds") == 7.0
    assert parse_retry_after({}, "retry in 250ms") == 0.25
    assert parse_retry_after({}, "nothing here") is None


# --- non-streaming, models, balance, tokens ----------------------------------------------------------------------


async def test_complete_chat(make_kimi_client, offline_kimi):
    text, reasoning, finish, usage, meta = await make_kimi_client().complete_chat(ask("hi", model="kimi-k2-thinking"))
    record = offline_kimi.log.last_chat
    assert (text, reasoning, finish) == (record.sent_text, record.sent_reasoning, "stop")
    assert text and reasoning and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert meta.request_id and record.body["stream"] is False


async def test_complete_chat_errors_and_retries(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    with pytest.raises(errors.BadRequest):
        await client.complete_chat(ask("hi [[fault:status:400]]"))
    assert offline_kimi.chat_count == 1
    result = await client.complete_chat(ask("again [[fault:429_then_ok:1]]"))
    assert result.text and offline_kimi.chat_count == 3
    with pytest.raises(errors.BadResponse):
        await client.complete_chat(ask("hi [[fault:garbage]]"))


async def test_list_models_is_cached_and_falls_back(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    models = await client.list_models()
    assert "kimi-k2.6" in models and "kimi-k3" in models
    assert await client.list_models() == models
    assert sum(r.path.endswith("/models") for r in offline_kimi.log.records) == 1
    broken = make_kimi_client(api_key="sk-wrong-key-000000")
    broken.base_url += "/elsewhere"  # another cache key, and an endpoint that does not exist
    assert await broken.list_models() == ["fallback-a", "fallback-b"]


async def test_estimate_tokens(make_kimi_client):
    messages = [{"role": "user", "content": "你好 hello there"}]
    assert await make_kimi_client().estimate_tokens("kimi-k2", messages) == estimate_messages_locally(messages)
    missing = make_kimi_client()
    missing.base_url += "/elsewhere"
    assert await missing.estimate_tokens("kimi-k2", messages) is None


@pytest.mark.django_db(transaction=True)
async def test_fetch_balance_records_a_snapshot(make_kimi_client):
    snapshot = await make_kimi_client().fetch_balance()
    assert snapshot.source == "balance_endpoint" and snapshot.balance == Decimal("49.58")
    assert await ProviderSnapshot.objects.acount() == 1


@pytest.mark.django_db(transaction=True)
async def test_fetch_balance_without_endpoint_uses_last_credits_header(make_kimi_client):
    events = await collect(make_kimi_client(), ask("hi"))
    no_balance = make_kimi_client()
    no_balance.base_url += "/elsewhere"
    snapshot = await no_balance.fetch_balance()
    assert snapshot.source == "headers"
    assert snapshot.credits_remaining == events[0].credits_remaining
    assert snapshot.rate_limit == events[0].rate_limit


@pytest.mark.django_db(transaction=True)
async def test_stream_headers_are_recorded_at_most_once_a_minute(make_kimi_client):
    client = make_kimi_client(record_snapshots=True)
    await collect(client, ask("one"))
    await collect(client, ask("two"))
    await provider_state.headers.settle()
    snapshots = [s async for s in ProviderSnapshot.objects.all()]
    assert len(snapshots) == 1 and snapshots[0].source == "headers"
    assert snapshots[0].rate_limit["X-RateLimit-Limit"] == "60"


@pytest.mark.django_db(transaction=True)
async def test_a_stream_never_waits_for_the_database_thread(make_kimi_client):
    """A burst of sends keeps the worker's one database thread busy (Django's async cache methods run there too):
    recording the provider's headers must not hold an answer's pieces behind it (issue 23: every first delta of a
    50-chat burst came only once the last send was stored)."""
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)())  # thread-sensitive: the database thread
    try:
        events = await asyncio.wait_for(collect(make_kimi_client(record_snapshots=True), ask("hi")), timeout=10)
        assert any(isinstance(event, ContentDelta) for event in events)
    finally:
        release.set()
        await busy
    await provider_state.headers.settle()  # written once the thread is free
    assert await ProviderSnapshot.objects.filter(source="headers").acount() == 1


# --- Anthropic format --------------------------------------------------------------------------------------------


async def test_anthropic_stream(make_kimi_client, offline_kimi):
    client = make_kimi_client(api_format="anthropic")
    messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi 你好"}]
    events = await collect(client, ChatRequest("kimi-k2.6", messages, max_tokens=1000))
    record = offline_kimi.log.last_chat
    assert record.path == "/v1/messages" and record.headers["x-api-key"] == offline_kimi.api_key
    assert record.body["system"] == "be nice" and record.body["max_tokens"] == 1000
    assert isinstance(events[0], ResponseMeta)
    assert joined(events, ContentDelta) == record.sent_text != ""
    assert joined(events, ReasoningDelta) == record.sent_reasoning != ""
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop")]
    pieces = sum(isinstance(e, (ContentDelta, ReasoningDelta)) for e in events)
    assert isinstance(events[-1], Usage) and events[-1].completion_tokens == pieces


@pytest.mark.parametrize("quirk", ["crlf", "cr", "split_utf8", "multiline", "comments"])
async def test_anthropic_stream_quirks(make_kimi_client, offline_kimi, quirk):
    events = await collect(make_kimi_client(api_format="anthropic"), ask(f"hi [[fault:{quirk}]]"))
    assert joined(events, ContentDelta) == offline_kimi.log.last_chat.sent_text


async def test_anthropic_failures(make_kimi_client, offline_kimi):
    client = make_kimi_client(api_format="anthropic")
    with pytest.raises(errors.Overloaded) as caught:
        await collect(client, ask("hi [[fault:error_midstream]]"))
    assert caught.value.partial_text == offline_kimi.log.last_chat.sent_text != ""
    with pytest.raises(errors.Interrupted):
        await collect(client, ask("hi [[fault:no_done]]"))
    with pytest.raises(errors.AuthenticationFailed):
        await collect(make_kimi_client(api_format="anthropic", api_key="sk-nope-00000000"), ask("hi"))
    assert offline_kimi.chat_count == 3
    events = await collect(client, ask("hi", max_tokens=5))
    assert Finish("length") in events


async def test_anthropic_complete_chat(make_kimi_client, offline_kimi):
    result = await make_kimi_client(api_format="anthropic").complete_chat(ask("hi", model="kimi-k3"))
    record = offline_kimi.log.last_chat
    assert (result.text, result.reasoning, result.finish) == (record.sent_text, record.sent_reasoning, "stop")


# --- settings and the shared connection pool ---------------------------------------------------------------------


async def test_get_client_uses_settings(kimi_settings):
    client = get_client()
    assert client.base_url == kimi_settings.base_url and kimi_settings.api_key not in repr(client)
    events = await collect(client, ask("hi [[fault:429_then_ok:1]]"))
    assert joined(events, ContentDelta) == kimi_settings.log.last_chat.sent_text
    assert kimi_settings.chat_count == 2  # retried with the settings' budget


def test_shared_pool_follows_the_event_loop():
    async def grab():
        first = shared_http_client(30, 600)
        assert shared_http_client(30, 600) is first
        return first

    one = asyncio.run(grab())
    two = asyncio.run(grab())
    assert one is not two

    async def close():
        pool = shared_http_client(30, 600)
        await close_client()
        return pool

    assert asyncio.run(close()).is_closed


async def test_the_model_list_is_also_kept_in_process(make_kimi_client, offline_kimi, monkeypatch):
    """Sends check their model against the list: within MODELS_MEMO_SECONDS it comes from the client itself, with
    no trip to Django's cache; after it, from the cache again (shared by workers)."""
    from django.core.cache import cache

    from conversations.kimi import client as client_module

    client_module._models_memo.clear()
    client = make_kimi_client(models_cache_seconds=300)
    models = await client.list_models()
    client = make_kimi_client(models_cache_seconds=300)  # get_client() makes a client per call: the copy outlives it
    reads = []
    real_aget = cache.aget

    async def counting_aget(key, *args, **kwargs):
        reads.append(key)
        return await real_aget(key, *args, **kwargs)

    monkeypatch.setattr(cache, "aget", counting_aget)
    assert await client.list_models() == models and reads == []
    later = time.monotonic() + client_module.MODELS_MEMO_SECONDS + 1
    monkeypatch.setattr(client_module.time, "monotonic", lambda: later)
    assert await client.list_models() == models and len(reads) == 1
    assert sum(r.path.endswith("/models") for r in offline_kimi.log.records) == 1
