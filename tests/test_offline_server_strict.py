"""Issue 17 acceptance: the offline server refuses what each real API refuses, with its status, error type and
message, per model family and provider profile (sources: /work/shared/kimi-api-notes.md §3, §6, §9, §15; S001-S003).
"""

import httpx
import pytest

from conversations.offline.profiles import PROFILES

LONG = "word " * 40_000  # about 50,000 tokens by the local estimate: past moonshot-v1-8k's window


def user(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


HISTORY_NO_REASONING = [*user("q1"), {"role": "assistant", "content": "a1"}, *user("q2")]
HISTORY_EMPTY_REASONING = [*user("q1"), {"role": "assistant", "content": "a1", "reasoning_content": ""}, *user("q2")]
PARTIAL_NOT_LAST = [{"role": "assistant", "content": "x", "partial": True}, *user()]
PARTIAL_LAST = [*user(), {"role": "assistant", "content": "Sure", "partial": True}]
BAD = (400, "invalid_request_error")
OK = (200, None)

# (profile, path, model, extra body fields, (status, type), words in the message)
CASES = [
    # kimi-k3: sampling parameters and thinking are not in its schema; reasoning_effort low/high/max
    ("moonshot", "/chat/completions", "kimi-k3", {"temperature": 1}, BAD, "invalid temperature"),
    ("moonshot", "/chat/completions", "kimi-k3", {"top_p": 0.95}, BAD, "invalid top_p"),
    ("moonshot", "/chat/completions", "kimi-k3", {"n": 1}, BAD, "invalid n"),
    ("moonshot", "/chat/completions", "kimi-k3", {"thinking": {"type": "enabled"}}, BAD, "invalid thinking"),
    ("moonshot", "/chat/completions", "kimi-k3", {"reasoning_effort": "low"}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k3", {"reasoning_effort": "medium"}, BAD, "reasoning_effort"),
    ("moonshot", "/chat/completions", "kimi-k3", {"messages": HISTORY_NO_REASONING}, BAD,
     "thinking is enabled but reasoning_content is missing"),
    ("moonshot", "/chat/completions", "kimi-k3", {"messages": HISTORY_EMPTY_REASONING}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k3", {"max_completion_tokens": 2_000_000}, BAD, "at most 1048576"),
    # kimi-k2.7-code: the same fixed sampling; thinking only enabled (keep all)
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"temperature": 0.5}, BAD, "invalid temperature"),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"top_p": 0.9}, BAD, "invalid top_p"),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"n": 2}, BAD, "invalid n"),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"thinking": {"type": "disabled"}}, BAD, "invalid thinking"),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"thinking": {"type": "enabled", "keep": "all"}}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"messages": HISTORY_NO_REASONING}, BAD,
     "reasoning_content is missing in assistant message at index 1"),
    ("moonshot", "/chat/completions", "kimi-k2.7-code", {"reasoning_effort": "low"}, BAD, "not supported"),
    # kimi-k2.6 / k2.5: fixed values only; keep all (k2.6) turns Preserved Thinking on
    ("moonshot", "/chat/completions", "kimi-k2.6", {"temperature": 0.3}, BAD, "only 1 is allowed for this model"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"temperature": 0.6, "thinking": {"type": "disabled"}}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"temperature": 1.0, "thinking": {"type": "disabled"}}, BAD,
     "only 0.6 is allowed"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"n": 2}, BAD, "invalid n"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"messages": HISTORY_NO_REASONING}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k2.6",
     {"messages": HISTORY_NO_REASONING, "thinking": {"type": "enabled", "keep": "all"}}, BAD,
     "reasoning_content is missing"),
    ("moonshot", "/chat/completions", "kimi-k2.5", {"thinking": {"type": "enabled", "keep": "all"}}, BAD, "keep"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"reasoning_effort": "high"}, BAD, "not supported"),
    # kimi-k2 family and moonshot-v1: [0, 1], n 1-5, no thinking switch; moonshot-v1 defaults to temperature 0
    ("moonshot", "/chat/completions", "kimi-k2-0905-preview", {"temperature": 1.5}, BAD,
     "temperature must be in [0, 1]"),
    ("moonshot", "/chat/completions", "kimi-k2-0905-preview", {"temperature": 0, "n": 2}, BAD, "n > 1"),
    ("moonshot", "/chat/completions", "kimi-k2-0905-preview", {"temperature": 0.5, "n": 5}, OK, ""),
    ("moonshot", "/chat/completions", "kimi-k2-0905-preview", {"thinking": {"type": "enabled"}}, BAD,
     "invalid thinking"),
    ("moonshot", "/chat/completions", "kimi-k2-thinking", {"thinking": {"type": "disabled"}}, BAD, "always thinks"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"n": 2}, BAD, "n > 1"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"n": 6, "temperature": 0.5}, BAD, "n must be in [1, 5]"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"n": 3, "temperature": 0.5}, OK, ""),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"stop": ["a", "b", "c", "d", "e", "f"]}, BAD, "stop"),
    # context window: the prompt alone, then prompt + budget
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"messages": user(LONG)}, BAD, "Input token length too long"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"max_completion_tokens": 8192}, BAD,
     "exceeded model token limit : 8192"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"max_tokens": 8192}, BAD, "exceeded model token limit"),
    ("moonshot", "/chat/completions", "moonshot-v1-8k", {"max_completion_tokens": 1000}, OK, ""),
    # partial mode: only on the last assistant message, never with json_object
    ("moonshot", "/chat/completions", "kimi-k2.6", {"messages": PARTIAL_NOT_LAST}, BAD, "partial"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"messages": [{**user()[0], "partial": True}]}, BAD, "partial"),
    ("moonshot", "/chat/completions", "kimi-k2.6",
     {"messages": PARTIAL_LAST, "response_format": {"type": "json_object"}}, BAD, "json_object"),
    ("moonshot", "/chat/completions", "kimi-k2.6", {"messages": PARTIAL_LAST}, OK, ""),
    # models
    ("moonshot", "/chat/completions", "kimi-k1-retired", {}, (404, "resource_not_found_error"),
     "Not found the model kimi-k1-retired or Permission denied"),
    ("moonshot-cn", "/chat/completions", "kimi-k3", {}, OK, ""),
    # Ace Data Cloud: its seven models; Moonshot's rules behind it (S001's temperature 0.7 fails on k2.5)
    ("acedata", "/chat/completions", "kimi-k3", {}, (404, "resource_not_found_error"), "Not found the model"),
    ("acedata", "/chat/completions", "kimi-k2.5", {"temperature": 0.7}, BAD, "only 1 is allowed"),
    ("acedata", "/chat/completions", "kimi-k2-0905-preview", {"n": 100, "temperature": 0.5}, OK, ""),
    ("acedata", "/chat/completions", "kimi-k2.5", {"messages": PARTIAL_LAST}, BAD, "partial"),
    # kimi-k2.ai (S003): temperature 0-2 on /chat/completions, 0-1 on /messages, <= 4 stops, 128K/256K windows
    ("kimi-k2.ai", "/chat/completions", "kimi-k2", {"temperature": 1.5}, OK, ""),
    ("kimi-k2.ai", "/chat/completions", "kimi-k2", {"stop": ["a", "b", "c", "d", "e"]}, BAD, "at most 4"),
    ("kimi-k2.ai", "/chat/completions", "kimi-k2", {"max_tokens": 127_999}, BAD,
     "exceeded model token limit : 128000"),
    ("kimi-k2.ai", "/chat/completions", "kimi-k2-0905", {"max_tokens": 127_999}, OK, ""),
    ("kimi-k2.ai", "/chat/completions", "kimi-k2.6", {}, (404, "resource_not_found_error"), "Not found the model"),
    ("kimi-k2.ai", "/messages", "kimi-k2", {"max_tokens": None}, BAD, "max_tokens is required"),
    ("kimi-k2.ai", "/messages", "kimi-k2", {"temperature": 1.5}, BAD, "temperature"),
    ("kimi-k2.ai", "/messages", "kimi-k2", {"thinking": {"type": "enabled", "budget_tokens": 500}}, BAD,
     "at least 1024"),
    ("kimi-k2.ai", "/messages", "kimi-k2", {"thinking": {"type": "enabled", "budget_tokens": 2000}}, BAD,
     "greater than thinking.budget_tokens"),
    ("kimi-k2.ai", "/messages", "kimi-k2", {}, OK, ""),
    ("moonshot", "/messages", "kimi-k2.6", {"max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 4000}},
     OK, ""),
]  # fmt: skip


def _id(case) -> str:
    profile, path, model, extra, expected, _ = case
    return f"{profile}{path}-{model}-{'+'.join(extra) or 'plain'}-{expected[0]}"


@pytest.fixture
def servers(offline_kimi_profile):
    started = {}

    def get(profile):
        if profile not in started:
            started[profile] = offline_kimi_profile(profile)
        return started[profile]

    return get


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_request_gets_the_real_status_type_and_message(servers, case):
    profile, path, model, extra, (status, kind), words = case
    handle = servers(profile)
    body = {"model": model, "messages": user(), "stream": False}
    if path == "/messages":
        body["max_tokens"] = 1024
    body.update(extra)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"Authorization": f"Bearer {handle.api_key}", "X-API-Key": handle.api_key}
    response = httpx.post(handle.base_url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == status, response.text
    if status == 200:
        return
    payload = response.json()
    error = payload["error"]
    if path == "/messages":
        assert payload["type"] == "error"
        kind = {"resource_not_found_error": "not_found_error"}.get(kind, kind)
    assert error["type"] == kind
    assert words in error["message"]


def test_every_case_table_profile_exists():
    assert {case[0] for case in CASES} <= PROFILES.keys()


@pytest.mark.parametrize(
    ("profile", "present", "missing"),
    [
        ("moonshot", ["/models", "/users/me/balance", "/tokenizers/estimate-token-count"], []),
        ("acedata", [], ["/models", "/users/me/balance", "/tokenizers/estimate-token-count", "/messages"]),
        ("kimi-k2.ai", ["/models"], ["/users/me/balance", "/tokenizers/estimate-token-count"]),
    ],
)
def test_each_profile_serves_only_its_documented_endpoints(offline_kimi_profile, profile, present, missing):
    handle = offline_kimi_profile(profile)
    headers = {"Authorization": f"Bearer {handle.api_key}"}
    for path in present + missing:
        method = "POST" if path in ("/tokenizers/estimate-token-count", "/messages") else "GET"
        body = {"model": "kimi-k2", "messages": user(), "max_tokens": 10} if method == "POST" else None
        response = httpx.request(method, handle.base_url + path, json=body, headers=headers, timeout=10)
        if path in present:
            assert response.status_code == 200, path
        else:
            assert response.status_code == 404, path
            assert "model" not in response.json()["error"]["message"]  # an address, not a model, is missing


def test_models_listing_spec_fields_only_on_moonshot(offline_kimi_profile):
    moonshot, gateway = offline_kimi_profile("moonshot"), offline_kimi_profile("kimi-k2.ai")
    listed = httpx.get(moonshot.base_url + "/models", headers={"Authorization": f"Bearer {moonshot.api_key}"}).json()
    k3 = next(m for m in listed["data"] if m["id"] == "kimi-k3")
    assert k3["context_length"] == 1_000_000 and k3["supports_reasoning"] is True
    assert {"supports_image_in", "supports_video_in"} <= k3.keys()
    v1 = next(m for m in listed["data"] if m["id"] == "moonshot-v1-8k")
    assert v1["context_length"] == 8192 and v1["supports_reasoning"] is False
    basic = httpx.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {gateway.api_key}"}).json()
    assert [m["id"] for m in basic["data"]] == ["kimi-k2", "kimi-k2-0905"]
    assert all(m.keys() == {"id", "object", "owned_by"} for m in basic["data"])


def test_profile_headers(offline_kimi_profile):
    for profile, expected, absent in [
        ("moonshot", {"msh-request-id", "x-msh-trace-id", "x-ratelimit-reset"}, set()),
        ("acedata", {"x-trace-id"}, {"msh-request-id", "x-credits-remaining"}),
        ("kimi-k2.ai", {"x-request-id", "x-credits-remaining", "x-ratelimit-limit"}, {"msh-request-id"}),
    ]:
        handle = offline_kimi_profile(profile)
        model = PROFILES[profile].models[-1]
        body = {"model": model, "messages": user(), "stream": False}
        response = httpx.post(
            handle.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {handle.api_key}"}
        )
        assert response.status_code == 200
        names = {name.lower() for name in response.headers}
        assert expected <= names and not absent & names, profile
        if profile == "acedata":
            assert "usage" not in response.json()  # S002's example reply has none


def _stream(handle, body: dict, path="/chat/completions") -> list[dict]:
    headers = {"Authorization": f"Bearer {handle.api_key}"}
    response = httpx.post(handle.base_url + path, json={**body, "stream": True}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    events = []
    for line in response.text.split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(httpx.Response(200, content=line[6:]).json())
    return events


def test_without_a_limit_the_documented_default_cuts_the_answer(offline_kimi_profile):
    k2ai = offline_kimi_profile("kimi-k2.ai")
    events = _stream(k2ai, {"model": "kimi-k2", "messages": user("long [[tokens:3000]]")})
    final = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["choices"][0]["usage"]["completion_tokens"] == 1024
    # A field the gateway does not document is ignored, so the default still applies.
    ignored = _stream(
        k2ai, {"model": "kimi-k2", "messages": user("long [[tokens:3000]]"), "max_completion_tokens": 5000}
    )
    assert [e for e in ignored if e["choices"] and e["choices"][0]["finish_reason"]][0]["choices"][0][
        "finish_reason"
    ] == "length"
    enough = _stream(k2ai, {"model": "kimi-k2", "messages": user("long [[tokens:3000]]"), "max_tokens": 5000})
    assert [e for e in enough if e["choices"] and e["choices"][0]["finish_reason"]][0]["choices"][0][
        "finish_reason"
    ] == "stop"


def test_a_thinking_model_spends_the_default_budget_on_reasoning_first(offline_kimi_profile):
    moonshot = offline_kimi_profile("moonshot")
    events = _stream(moonshot, {"model": "kimi-k2-thinking", "messages": user("go [[tokens:2000]]")})
    reasoning = [e["choices"][0]["delta"].get("reasoning_content") for e in events if e["choices"]]
    content = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    reasoning, content = [r for r in reasoning if r], [c for c in content if c]
    assert reasoning and len(reasoning) + len(content) == 1024
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]][0]["choices"][0]
    assert final["finish_reason"] == "length"


def test_cached_tokens_for_a_repeated_prefix_in_both_usage_placements(offline_kimi_profile):
    moonshot = offline_kimi_profile("moonshot")
    system = {"role": "system", "content": "You are a careful assistant. " * 80}
    first = {"model": "kimi-k2.6", "messages": [system, *user("one")], "prompt_cache_key": "conv-1"}
    second = {**first, "messages": [system, *user("two")], "stream_options": {"include_usage": True}}
    _stream(moonshot, first)
    events = _stream(moonshot, second)
    choice_usage = [e["choices"][0]["usage"] for e in events if e["choices"] and e["choices"][0].get("usage")][0]
    top_usage = [e["usage"] for e in events if not e["choices"] and e.get("usage")][0]
    assert choice_usage["cached_tokens"] == top_usage["cached_tokens"] > 256
    assert choice_usage["cached_tokens"] < choice_usage["prompt_tokens"]
    other_key = _stream(moonshot, {**second, "prompt_cache_key": "conv-2"})
    assert "cached_tokens" not in [e for e in other_key if not e["choices"]][0]["usage"]
    gateway = offline_kimi_profile("kimi-k2.ai")
    plain = {"model": "kimi-k2", "messages": [system, *user("one")], "stream_options": {"include_usage": True}}
    _stream(gateway, plain)
    again = _stream(gateway, {**plain, "messages": [system, *user("two")]})
    usage = [e for e in again if not e["choices"]][0]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] > 256 and "cached_tokens" not in usage


def test_partial_mode_continues_without_the_prefix(offline_kimi_profile):
    moonshot = offline_kimi_profile("moonshot")
    messages = [
        *user("[[echo]] Hello wonderful world"),
        {"role": "assistant", "content": "Hello wonder", "partial": True},
    ]
    events = _stream(moonshot, {"model": "kimi-k2-0905-preview", "messages": messages})
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "ful world"


def test_command_takes_a_profile():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="invalid choice"):
        call_command("offlinekimi", "--profile", "openai-proper", "--port", "0")
