"""Per-model parameter rules, checked before any request, and the request bodies built from them."""

import pytest

from conversations.kimi import anthropic_format, openai_format
from conversations.kimi.errors import InvalidParameter
from conversations.kimi.params import ChatRequest, model_capabilities, resolve_params
from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally

USER = [{"role": "user", "content": "hi"}]


def body(request: ChatRequest, fmt=openai_format, stream=True) -> dict:
    return fmt.build_body(request, resolve_params(request), stream=stream)


@pytest.mark.parametrize(
    ("model", "thinking", "temperature", "top_p", "window"),
    [
        ("kimi-k2.6", "toggle", {"fixed": 1.0, "fixed_without_thinking": 0.6}, {"fixed": 0.95}, 262_144),
        ("kimi-k2.5", "toggle", {"fixed": 1.0, "fixed_without_thinking": 0.6}, {"fixed": 0.95}, 262_144),
        # k2.7 always thinks and, like k3, has top_p fixed at 0.95 [notes §3]; both were wrong before issue 17.
        ("kimi-k2.7-code", "always", {"fixed": 1.0}, {"fixed": 0.95}, 262_144),
        ("kimi-k3", "always", {"fixed": 1.0}, {"fixed": 0.95}, 1_000_000),
        ("kimi-k2-thinking-turbo", "always", {"min": 0.0, "max": 1.0}, {"min": 0.0, "max": 1.0}, 262_144),
        ("kimi-k2-0905-preview", "none", {"min": 0.0, "max": 1.0}, {"min": 0.0, "max": 1.0}, 262_144),
        ("kimi-k2", "none", {"min": 0.0, "max": 1.0}, {"min": 0.0, "max": 1.0}, 131_072),
        ("moonshot-v1-32k", "none", {"min": 0.0, "max": 1.0}, {"min": 0.0, "max": 1.0}, 32_768),
        ("some-other-model", "none", {"min": 0.0, "max": 2.0}, {"min": 0.0, "max": 1.0}, None),
    ],
)
def test_capabilities_per_family(model, thinking, temperature, top_p, window):
    caps = model_capabilities(model)
    assert caps["thinking"] == thinking
    assert caps["temperature"] == temperature
    assert caps["top_p"] == top_p
    assert caps["context_window"] == window
    assert caps["json_mode"] is True
    assert caps["thinking_default"] is (thinking != "none")


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"model": "kimi-k2", "temperature": 1.2}, "temperature must be between 0 and 1"),
        ({"model": "kimi-k2", "temperature": -0.1}, "temperature must be between 0 and 1"),
        ({"model": "some-other-model", "temperature": 2.5}, "between 0 and 2"),
        ({"model": "kimi-k2", "temperature": 0, "n": 2}, "n > 1"),
        ({"model": "kimi-k2", "temperature": 0.005, "n": 3}, "n > 1"),
        ({"model": "kimi-k2.6", "temperature": 0.3}, "fixed temperature of 1"),
        ({"model": "kimi-k2.6", "temperature": 1.0, "thinking": False}, "fixed temperature of 0.6"),
        ({"model": "kimi-k2.5", "top_p": 0.5}, "fixed top_p of 0.95"),
        ({"model": "kimi-k2.6", "n": 2}, "exactly 1 answer"),
        ({"model": "kimi-k3", "temperature": 0.7}, "fixed temperature of 1"),
        ({"model": "kimi-k2.7-code", "temperature": 0.2}, "fixed temperature of 1"),
        ({"model": "kimi-k3", "thinking": False}, "always thinks"),
        ({"model": "kimi-k2-thinking", "thinking": False}, "always thinks"),
        ({"model": "kimi-k2", "max_tokens": 0}, "at least 1"),
        ({"model": "kimi-k2", "max_tokens": 10_000_000}, "context window"),
        ({"model": "kimi-k2", "top_p": 1.5}, "top_p must be between 0 and 1"),
        ({"model": "kimi-k2", "n": 0}, "at least 1"),
        ({"model": " ", "messages": USER}, "Pick a model"),
    ],
)
def test_invalid_settings_are_rejected_with_a_clear_message(request_kwargs, message):
    kwargs = {"messages": USER, **request_kwargs}
    with pytest.raises(InvalidParameter) as caught:
        resolve_params(ChatRequest(**kwargs))
    assert message in caught.value.message
    assert caught.value.code == "invalid_parameter"


def test_no_messages_is_rejected():
    with pytest.raises(InvalidParameter, match="no message"):
        resolve_params(ChatRequest("kimi-k2", []))


def test_k26_sends_thinking_toggle_and_never_the_fixed_values():
    on = body(ChatRequest("kimi-k2.6", USER, temperature=1.0, top_p=0.95, n=1))
    off = body(ChatRequest("kimi-k2.6", USER, thinking=False, temperature=0.6))
    default = body(ChatRequest("kimi-k2.6", USER))
    assert on["thinking"] == {"type": "enabled"} and default["thinking"] == {"type": "enabled"}
    assert off["thinking"] == {"type": "disabled"}
    for sent in (on, off, default):
        assert not {"temperature", "top_p", "n"} & sent.keys()


def test_always_thinking_and_plain_models_send_no_toggle():
    assert "thinking" not in body(ChatRequest("kimi-k3", USER, thinking=True))
    assert "thinking" not in body(ChatRequest("kimi-k2-thinking", USER))
    # Thinking asked for a model without it: nothing to switch on, ignored (documented).
    assert "thinking" not in body(ChatRequest("kimi-k2", USER, thinking=True))


def test_openai_body_fields():
    sent = body(ChatRequest("kimi-k2", USER, temperature=0.3, top_p=0.9, max_tokens=100, json_mode=True, n=2))
    assert sent == {
        "model": "kimi-k2",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "top_p": 0.9,
        "n": 2,
        "max_completion_tokens": 100,  # Moonshot deprecates max_tokens [notes §3]; gateways: see test_kimi_fidelity
        "response_format": {"type": "json_object"},
    }
    assert "stream_options" not in body(ChatRequest("kimi-k2", USER), stream=False)


def test_earlier_reasoning_is_sent_back_on_assistant_messages():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning": "r1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q2"},
    ]
    sent = body(ChatRequest("kimi-k2.6", messages))["messages"]
    assert sent[2] == {"role": "assistant", "content": "a1", "reasoning_content": "r1"}
    assert sent[3] == {"role": "assistant", "content": "a2"}
    assert all("reasoning" not in m for m in sent)

    anthropic = body(ChatRequest("kimi-k2.6", messages), fmt=anthropic_format)
    assert anthropic["system"] == "be brief"
    assert anthropic["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "r1"},
        {"type": "text", "text": "a1"},
    ]


def test_anthropic_body_requires_max_tokens_and_puts_system_on_top():
    messages = [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"}, *USER]
    sent = body(ChatRequest("kimi-k2", messages, temperature=0.5), fmt=anthropic_format)
    assert sent == {
        "model": "kimi-k2",
        "messages": USER,
        "max_tokens": anthropic_format.DEFAULT_MAX_TOKENS,
        "stream": True,
        "system": "s1\n\ns2",
        "temperature": 0.5,
    }
    off = body(ChatRequest("kimi-k2.6", USER, thinking=False, max_tokens=50), fmt=anthropic_format)
    assert off["thinking"] == {"type": "disabled"} and off["max_tokens"] == 50
    with pytest.raises(InvalidParameter, match="JSON mode"):
        body(ChatRequest("kimi-k2", USER, json_mode=True), fmt=anthropic_format)


def test_local_token_estimate():
    assert estimate_tokens_locally("") == 0
    assert estimate_tokens_locally("你好世界") == 4  # one per CJK character
    assert estimate_tokens_locally("abcdefgh") == 2  # about four Latin characters per token
    assert estimate_tokens_locally("你好 abcd") == 2 + 2
    assert estimate_messages_locally([{"role": "user", "content": "你好"}]) == 4 + 2
