"""Issue 17, the client half: what the client sends per model and provider, and how it reads failures.

Each test here failed against the client before the issue; the § numbers are /work/shared/kimi-api-notes.md's."""

import time

import httpx
import pytest

from conversations.kimi import anthropic_format, errors, openai_format, provider_state
from conversations.kimi import client as client_module
from conversations.kimi.client import meta_from_headers
from conversations.kimi.error_mapping import error_from_response, parse_retry_after
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta, ResponseMeta, Usage
from conversations.kimi.params import (
    ChatRequest,
    budget_margin,
    model_capabilities,
    output_budget,
    resolve_params,
    rules_for,
)
from conversations.kimi.providers import provider_for_url
from conversations.kimi.tokens import estimate_messages_locally

USER = [{"role": "user", "content": "hi"}]
HISTORY = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},  # an answer stored without reasoning
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "a2", "reasoning": "r2"},
    {"role": "user", "content": "q3"},
]


def body(request: ChatRequest, provider=None, fmt=openai_format, stream=True) -> dict:
    return fmt.build_body(request, resolve_params(request, provider), stream=stream)


# --- thinking ------------------------------------------------------------------------------------------------------


def test_k27_code_always_thinks_and_sends_no_thinking_field():
    """§3: k2.7-code only accepts thinking enabled; `"disabled"` is an error, so the field is omitted."""
    assert "thinking" not in body(ChatRequest("kimi-k2.7-code", USER))
    assert "thinking" not in body(ChatRequest("kimi-k2.7-code-highspeed", USER, thinking=True))
    with pytest.raises(errors.InvalidParameter, match="always thinks"):
        resolve_params(ChatRequest("kimi-k2.7-code", USER, thinking=False))
    for name, value in (("top_p", 0.5), ("n", 2)):
        with pytest.raises(errors.InvalidParameter):
            resolve_params(ChatRequest("kimi-k2.7-code", USER, **{name: value}))


@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k2.7-code"])
def test_preserved_thinking_sends_reasoning_content_on_every_assistant_turn(model):
    """§6: k3 and k2.7 need reasoning_content on every earlier assistant turn, "" where there was none."""
    sent = body(ChatRequest(model, HISTORY))["messages"]
    assert sent[1] == {"role": "assistant", "content": "a1", "reasoning_content": ""}
    assert sent[3] == {"role": "assistant", "content": "a2", "reasoning_content": "r2"}


def test_k26_preserves_reasoning_only_with_keep_all():
    plain = body(ChatRequest("kimi-k2.6", HISTORY))
    assert "reasoning_content" not in plain["messages"][1] and plain["thinking"] == {"type": "enabled"}
    kept = body(ChatRequest("kimi-k2.6", HISTORY, keep_reasoning=True))
    assert kept["thinking"] == {"type": "enabled", "keep": "all"}
    assert kept["messages"][1]["reasoning_content"] == "" and kept["messages"][3]["reasoning_content"] == "r2"
    with pytest.raises(errors.InvalidParameter):
        resolve_params(ChatRequest("kimi-k2.5", USER, keep_reasoning=True))  # k2.5 has no keep [notes §3]


def test_gateways_get_the_thinking_field_only_when_it_changes_the_default():
    """§4: gateways may refuse undocumented fields; thinking on is k2.5's default there, so nothing is sent."""
    assert "thinking" not in body(ChatRequest("kimi-k2.5", USER), "acedata")
    assert body(ChatRequest("kimi-k2.5", USER, thinking=False), "acedata")["thinking"] == {"type": "disabled"}
    assert body(ChatRequest("kimi-k2.5", USER), "moonshot")["thinking"] == {"type": "enabled"}


def test_anthropic_thinking_budget_respects_the_minimum():
    sent = body(ChatRequest("kimi-k2.6", USER, max_tokens=1500), fmt=anthropic_format)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["thinking"]["budget_tokens"] < sent["max_tokens"]
    assert "thinking" not in body(ChatRequest("kimi-k2.6", USER, max_tokens=800), fmt=anthropic_format)
    big = body(ChatRequest("kimi-k2.6", USER, max_tokens=10_000), fmt=anthropic_format)
    assert big["thinking"]["budget_tokens"] == 5000


# --- reasoning_effort, prompt_cache_key, n, windows ------------------------------------------------------------------


def test_reasoning_effort_only_on_k3():
    assert body(ChatRequest("kimi-k3", USER, reasoning_effort="low"))["reasoning_effort"] == "low"
    assert "reasoning_effort" not in body(ChatRequest("kimi-k3", USER))  # the model's default (max)
    with pytest.raises(errors.InvalidParameter, match="one of low, high, max"):
        resolve_params(ChatRequest("kimi-k3", USER, reasoning_effort="medium"))
    for model in ("kimi-k2.6", "kimi-k2.7-code", "moonshot-v1-8k"):
        with pytest.raises(errors.InvalidParameter, match="reasoning effort"):
            resolve_params(ChatRequest(model, USER, reasoning_effort="low"))
    assert model_capabilities("kimi-k3")["reasoning_effort"] == {"choices": ["low", "high", "max"], "default": "max"}
    assert model_capabilities("kimi-k2.6")["reasoning_effort"] is None


def test_prompt_cache_key_is_sent_where_documented():
    request = ChatRequest("kimi-k2.6", USER, prompt_cache_key="conv-42")
    assert body(request)["prompt_cache_key"] == "conv-42"
    assert "prompt_cache_key" not in body(request, "kimi-k2.ai")
    assert "prompt_cache_key" not in body(request, "acedata")


@pytest.mark.parametrize(
    ("model", "provider", "n", "ok"),
    [
        ("moonshot-v1-8k", None, 5, True),
        ("moonshot-v1-8k", None, 6, False),
        ("kimi-k2-0905-preview", None, 5, True),
        ("kimi-k2-0905-preview", None, 6, False),
        ("kimi-k2-0905-preview", "acedata", 100, True),  # S002: 1-128
        ("kimi-k2.5", "acedata", 2, False),  # fixed upstream, whatever the gateway says
        ("kimi-k3", None, 2, False),
    ],
)
def test_n_limits_per_model_and_provider(model, provider, n, ok):
    request = ChatRequest(model, USER, n=n, temperature=0.5 if model.startswith(("moonshot", "kimi-k2-")) else None)
    if ok:
        assert body(request, provider)["n"] == n
    else:
        with pytest.raises(errors.InvalidParameter):
            resolve_params(request, provider)


def test_moonshot_v1_needs_a_temperature_for_several_answers():
    """§3: moonshot-v1's default temperature is 0.0, and n > 1 at ~0 is refused."""
    with pytest.raises(errors.InvalidParameter, match="n > 1"):
        resolve_params(ChatRequest("moonshot-v1-8k", USER, n=2))


def test_context_windows_per_provider():
    assert rules_for("kimi-k2").context_window == 131_072
    assert rules_for("kimi-k2", "kimi-k2.ai").context_window == 128_000  # S003
    assert rules_for("kimi-k2-0905", "kimi-k2.ai").context_window == 256_000
    assert rules_for("kimi-k2-0905", "kimi-k2.ai").max_output == 8192
    assert rules_for("kimi-k3").max_output == 1_048_576 and rules_for("kimi-k3").default_output == 131_072


def test_provider_is_guessed_from_the_base_url():
    assert provider_for_url("https://api.moonshot.ai/v1").name == "moonshot"
    assert provider_for_url("https://api.moonshot.cn/v1").name == "moonshot-cn"
    assert provider_for_url("https://api.acedata.cloud/kimi").name == "acedata"
    assert provider_for_url("https://kimi-k2.ai/api/v1").name == "kimi-k2.ai"
    assert provider_for_url("http://127.0.0.1:8765/v1").name == "moonshot"


# --- output budget ---------------------------------------------------------------------------------------------------


def test_output_budget_is_the_setting_or_a_full_answer_clamped_to_the_window():
    assert output_budget("kimi-k2.6", None, 1000) == 32_768
    assert output_budget("kimi-k2.6", 5000, 1000) == 5000
    assert output_budget("kimi-k3", None, 1000) == 131_072
    assert output_budget("kimi-k2-0905-preview", None, 1000) == 8192  # not the API's 1,024 default
    assert output_budget("kimi-k2", None, 1000, "kimi-k2.ai") == 8192  # S003's output maximum
    assert output_budget("kimi-k2", 50_000, 1000, "kimi-k2.ai") == 8192
    window = 8192
    assert output_budget("moonshot-v1-8k", None, 7000) == window - 7000 - budget_margin(window)
    with pytest.raises(errors.ContextTooLong):
        output_budget("moonshot-v1-8k", None, 8000)


def test_output_budget_field_name_per_provider():
    request = ChatRequest("kimi-k2-0905-preview", USER, max_tokens=3000)
    assert body(request)["max_completion_tokens"] == 3000 and "max_tokens" not in body(request)
    for gateway in ("acedata", "kimi-k2.ai"):
        sent = body(request, gateway)
        assert sent["max_tokens"] == 3000 and "max_completion_tokens" not in sent


# --- partial mode ----------------------------------------------------------------------------------------------------


def test_continue_from_appends_the_partial_assistant_message():
    sent = body(ChatRequest("kimi-k2.6", USER, continue_from="Once upon"))["messages"]
    assert sent[-1] == {"role": "assistant", "content": "Once upon", "partial": True}
    k3 = body(ChatRequest("kimi-k3", USER, continue_from="Once upon"))["messages"]
    assert k3[-1] == {"role": "assistant", "content": "Once upon", "partial": True, "reasoning_content": ""}
    anthropic = body(ChatRequest("kimi-k2.6", USER, continue_from="Once upon"), fmt=anthropic_format)
    assert anthropic["messages"][-1] == {"role": "assistant", "content": "Once upon"}
    with pytest.raises(errors.InvalidParameter, match="JSON mode"):
        resolve_params(ChatRequest("kimi-k2.6", USER, continue_from="{", json_mode=True))
    with pytest.raises(errors.InvalidParameter, match="provider"):
        resolve_params(ChatRequest("kimi-k2", USER, continue_from="x"), "kimi-k2.ai")


# --- capabilities ----------------------------------------------------------------------------------------------------


def test_capabilities_prefer_what_models_endpoint_says():
    info = {"context_length": 524_288, "supports_image_in": True, "supports_video_in": False}
    caps = model_capabilities("kimi-k2.7-code", info)
    assert caps["context_window"] == 524_288 and caps["image_in"] is True and caps["video_in"] is False
    assert caps["source"] == "models_endpoint"
    fallback = model_capabilities("kimi-k2.7-code")
    assert fallback["context_window"] == 262_144 and fallback["image_in"] is False and fallback["source"] == "name"
    assert model_capabilities("moonshot-v1-8k", {"supports_reasoning": False})["thinking"] == "none"


# --- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "exc_class"),
    [
        (400, {"error": {"type": "invalid_request_error", "message": "Input token length too long"}}, {},
         errors.ContextTooLong),
        (400, {"error": {"type": "invalid_request_error",
                         "message": "Invalid request: Your request exceeded model token limit : 262144"}}, {},
         errors.ContextTooLong),
        (404, {"error": {"type": "resource_not_found_error", "message": "url.not_found"}}, {},
         errors.EndpointNotFound),
        (404, b"<html><body>404 Not Found</body></html>", {}, errors.EndpointNotFound),
        (404, b"", {}, errors.EndpointNotFound),
        (404, {"error": {"type": "resource_not_found_error",
                         "message": "Not found the model kimi-k9 or Permission denied"}}, {}, errors.ModelNotFound),
        (404, {"type": "error", "error": {"type": "not_found_error",
                                          "message": "Not found the model x or Permission denied"}}, {},
         errors.ModelNotFound),
        (403, {"error": {"type": "permission_denied_error", "message": "The API you are accessing is not open"}}, {},
         errors.AccessDenied),
        (403, b"", {}, errors.AccessDenied),
        (403, {"error": {"message": "Insufficient balance"}}, {}, errors.PermissionDenied),
        (403, {"error": {"code": "used_up", "message": "used up"}, "trace_id": "t"}, {}, errors.PermissionDenied),
    ],
)  # fmt: skip
def test_error_mapping_fixes(status, body, headers, exc_class):
    assert type(error_from_response(status, body, headers)) is exc_class


def test_new_error_codes_and_messages():
    assert errors.EndpointNotFound.code == "upstream_not_found" and "model" not in errors.EndpointNotFound.code
    assert "Pick another model" not in errors.EndpointNotFound.default_message
    assert errors.AccessDenied.code == "upstream_access_denied"
    assert "quota" not in errors.AccessDenied.default_message and "credits" not in errors.AccessDenied.default_message


def test_rate_limit_reset_header_is_waited_for_without_retry_after():
    reset = int(time.time()) + 5
    assert 3.5 <= parse_retry_after({"X-RateLimit-Reset": str(reset)}) <= 5.0
    assert parse_retry_after({"X-RateLimit-Reset": "7"}) == 7.0  # a small number: seconds from now
    assert parse_retry_after({"Retry-After": "2", "X-RateLimit-Reset": str(reset)}) == 2.0  # Retry-After wins
    exc = error_from_response(
        429, {"error": {"type": "rate_limit_reached_error", "message": "slow down"}}, {"X-RateLimit-Reset": str(reset)}
    )
    assert isinstance(exc, errors.RateLimited) and 3.5 <= exc.retry_after <= 5.0


def test_request_id_from_trace_headers():
    assert meta_from_headers(httpx.Headers({"x-trace-id": "t-1"})).request_id == "t-1"
    assert meta_from_headers(httpx.Headers({"x-msh-trace-id": "m-1", "x-request-id": "r"})).request_id == "m-1"
    exc = error_from_response(500, {"error": {"type": "server_error", "message": "x"}}, {"x-msh-trace-id": "m-2"})
    assert exc.request_id == "m-2"


# --- against the strict offline server -------------------------------------------------------------------------------


async def collect(client, request: ChatRequest) -> list:
    return [event async for event in client.stream_chat(request)]


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


async def test_continue_from_yields_only_the_new_text(make_kimi_client, offline_kimi):
    request = ChatRequest(
        "kimi-k2-0905-preview", [{"role": "user", "content": "[[echo]] Hello wonderful world"}], continue_from="Hello"
    )
    events = await collect(make_kimi_client(), request)
    assert text_of(events) == " wonderful world"
    assert offline_kimi.last_request_body["messages"][-1] == {"role": "assistant", "content": "Hello", "partial": True}


async def test_seed_003_profile_with_the_apps_budget_is_not_cut_at_1024(make_kimi_client, offline_kimi_profile):
    """The acceptance case: kimi-k2.ai applies max_tokens=1024 when none is sent [S003]; output_budget() sends
    enough, in the field that gateway reads."""
    k2ai = offline_kimi_profile("kimi-k2.ai")
    client = make_kimi_client(base_url=k2ai.base_url, provider="kimi-k2.ai")
    messages = [{"role": "user", "content": "a long story [[tokens:3000]]"}]
    cut = await collect(client, ChatRequest("kimi-k2", messages))
    assert Finish("length") in cut and len(text_of(cut).split()) < 1100
    budget = output_budget("kimi-k2", None, estimate_messages_locally(messages), "kimi-k2.ai")
    events = await collect(client, ChatRequest("kimi-k2", messages, max_tokens=budget))
    assert Finish("stop") in events
    assert next(e for e in events if isinstance(e, Usage)).completion_tokens == 3000
    assert k2ai.last_request_body["max_tokens"] == budget == 8192


@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k2.7-code"])
async def test_preserved_thinking_history_is_accepted(make_kimi_client, offline_kimi, model):
    events = await collect(make_kimi_client(), ChatRequest(model, HISTORY, reasoning_effort=None))
    assert text_of(events) and offline_kimi.log.last_chat.status == 200


async def test_k3_reasoning_effort_and_k27_reach_the_strict_server(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    await collect(client, ChatRequest("kimi-k3", USER, reasoning_effort="high", temperature=1.0))
    assert offline_kimi.last_request_body["reasoning_effort"] == "high"
    assert "temperature" not in offline_kimi.last_request_body
    await collect(client, ChatRequest("kimi-k2.7-code", USER, thinking=True, top_p=0.95, n=1))
    assert {"thinking", "top_p", "n"}.isdisjoint(offline_kimi.last_request_body)


async def test_model_info_comes_from_the_models_endpoint(make_kimi_client, offline_kimi, offline_kimi_profile):
    client_module._models_memo.clear()
    info = await make_kimi_client().model_info()
    assert info["kimi-k3"]["context_length"] == 1_000_000 and info["kimi-k3"]["supports_reasoning"] is True
    caps = model_capabilities("moonshot-v1-8k-vision-preview", info["moonshot-v1-8k-vision-preview"])
    assert caps["image_in"] is True and caps["source"] == "models_endpoint"
    gateway = offline_kimi_profile("kimi-k2.ai")
    assert await make_kimi_client(base_url=gateway.base_url).model_info() == {}


async def test_a_failed_models_request_is_remembered(make_kimi_client, offline_kimi_profile):
    client_module._models_memo.clear()
    acedata = offline_kimi_profile("acedata")  # documents no /models
    for _ in range(3):
        assert await make_kimi_client(base_url=acedata.base_url).list_models() == ["fallback-a", "fallback-b"]
    assert sum(r.path.endswith("/models") for r in acedata.log.records) == 1


async def test_a_wrong_base_url_is_an_endpoint_error_not_a_model_error(make_kimi_client, offline_kimi):
    with pytest.raises(errors.EndpointNotFound) as caught:
        await collect(make_kimi_client(base_url=offline_kimi.base_url + "/v1"), ChatRequest("kimi-k2", USER))
    assert caught.value.code == "upstream_not_found"
    assert [r.status for r in offline_kimi.log.records] == [404]  # not retried


async def test_json_answer_to_a_stream_keeps_the_headers(make_kimi_client, offline_kimi_profile):
    acedata = offline_kimi_profile("acedata")
    client = make_kimi_client(base_url=acedata.base_url)
    events = await collect(
        client, ChatRequest("kimi-k2-turbo-preview", [{"role": "user", "content": "hi [[fault:json_for_stream]]"}])
    )
    assert isinstance(events[0], ResponseMeta)
    assert events[0].request_id == acedata.log.last_chat.headers.get("x-trace-id", events[0].request_id) != ""
    assert text_of(events) == acedata.log.last_chat.sent_text != ""
    assert not any(isinstance(e, Usage) for e in events)  # Ace Data's JSON reply carries no usage


async def test_json_fallback_remembers_rate_limit_headers(make_kimi_client, offline_kimi):
    events = await collect(
        make_kimi_client(), ChatRequest("kimi-k2", [{"role": "user", "content": "hi [[fault:json_for_stream]]"}])
    )
    meta = events[0]
    assert isinstance(meta, ResponseMeta) and meta.request_id and meta.rate_limit
    assert provider_state.last_meta() == meta


async def test_cached_tokens_reach_the_usage_event(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    system = {"role": "system", "content": "Stay on topic and be exact. " * 80}
    for question in ("one", "two"):
        events = await collect(
            client,
            ChatRequest("kimi-k2.6", [system, {"role": "user", "content": question}], prompt_cache_key="conv-7"),
        )
    usage = events[-1]
    assert isinstance(usage, Usage) and 256 < usage.cached_tokens < usage.prompt_tokens
    assert offline_kimi.last_request_body["prompt_cache_key"] == "conv-7"


async def test_gateway_thinking_off_for_k25_is_accepted(make_kimi_client, offline_kimi_profile):
    acedata = offline_kimi_profile("acedata")
    client = make_kimi_client(base_url=acedata.base_url, provider="acedata")
    on = await collect(client, ChatRequest("kimi-k2.5", USER))
    assert "thinking" not in acedata.last_request_body and any(isinstance(e, ReasoningDelta) for e in on)
    off = await collect(client, ChatRequest("kimi-k2.5", USER, thinking=False))
    assert acedata.last_request_body["thinking"] == {"type": "disabled"}
    assert not any(isinstance(e, ReasoningDelta) for e in off)


async def test_continue_from_in_the_anthropic_format_is_a_prefill(make_kimi_client, offline_kimi):
    request = ChatRequest(
        "kimi-k2-0905-preview", [{"role": "user", "content": "[[echo]] Hello wonderful world"}], continue_from="Hello"
    )
    events = await collect(make_kimi_client(api_format="anthropic"), request)
    assert text_of(events) == " wonderful world"
    assert offline_kimi.last_request_body["messages"][-1] == {"role": "assistant", "content": "Hello"}
