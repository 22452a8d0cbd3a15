"""Tools on the request side of the Kimi client: which tools and tool_choice values are sent per model, and how a
tool-call turn and its results go back into the history (OpenAI and Anthropic formats). Pure: no server."""

import pytest

from conversations.kimi import anthropic_format, openai_format
from conversations.kimi.errors import InvalidParameter
from conversations.kimi.params import ChatRequest, model_capabilities, resolve_params
from conversations.kimi.tools import WEB_SEARCH_TOOL, ToolCallCollector


def fn(name, **extra):
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}, **extra}}


def body(request, fmt=openai_format, provider=None):
    return fmt.build_body(request, resolve_params(request, provider), stream=True)


def ask(model="kimi-k3", **options):
    return ChatRequest(model, [{"role": "user", "content": "hi"}], **options)


@pytest.mark.parametrize(
    "tools, message",
    [
        ([], "non-empty list"),
        ([fn("1starts_with_digit")], "must start with a letter"),
        ([fn("has space")], "must start with a letter"),
        ([fn("$web_search")], "must start with a letter"),  # "$" is reserved for built-ins [doc: websearch]
        ([fn("a" * 257)], "at most 256"),
        ([fn("get_weather"), fn("get_weather")], "declared twice"),
        ([{"type": "builtin_function", "function": {"name": "$fetch"}}], "unknown built-in"),
        ([{"type": "builtin_function", "function": {"name": "$web_search", "description": "x"}}], "no description"),
        ([{"type": "retrieval", "function": {"name": "x"}}], "'type' must be"),
        ([{"type": "function"}], "'function' object"),
        ([fn("ok", parameters="not a schema")], "JSON Schema"),
    ],
)
def test_bad_tools_are_refused_before_sending(tools, message):
    with pytest.raises(InvalidParameter, match=message):
        resolve_params(ask(tools=tools))


def test_valid_names_and_the_builtin_are_sent_as_given():
    tools = [fn("get_weather"), fn("_x-1"), fn("a" * 256), WEB_SEARCH_TOOL]
    sent = body(ask(tools=tools, tool_choice="auto"))
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert "tools" not in body(ask())


@pytest.mark.parametrize(
    "model, thinking, choice, error",
    [
        ("kimi-k3", None, "required", None),
        ("kimi-k3", None, "none", None),
        ("kimi-k3", None, {"type": "function", "function": {"name": "get_weather"}}, "while the model thinks"),
        ("kimi-k2.6", None, "required", "only available on kimi-k3"),
        ("kimi-k2.7-code", None, "required", "only available on kimi-k3"),
        ("kimi-k2.6", True, {"type": "function", "function": {"name": "get_weather"}}, "while the model thinks"),
        ("kimi-k2.6", False, {"type": "function", "function": {"name": "get_weather"}}, None),
        ("kimi-k2.6", False, {"type": "function", "function": {"name": "other"}}, "not among the tools"),
        ("moonshot-v1-8k", None, "auto", None),
        ("moonshot-v1-8k", None, "sometimes", "must be 'auto'"),
    ],
)
def test_tool_choice_rules_per_model(model, thinking, choice, error):
    request = ask(model, thinking=thinking, tools=[fn("get_weather")], tool_choice=choice)
    if error:
        with pytest.raises(InvalidParameter, match=error):
            resolve_params(request)
    else:
        assert body(request)["tool_choice"] == choice


def test_tool_choice_without_tools_is_refused():
    with pytest.raises(InvalidParameter, match="needs 'tools'"):
        resolve_params(ask(tool_choice="auto"))


CALL = {"id": "$web_search:0", "type": "builtin_function", "function": {"name": "$web_search", "arguments": '{"a":1}'}}


def tool_turn(model="kimi-k3", **options):
    messages = [
        {"role": "user", "content": "news?"},
        {"role": "assistant", "content": "", "reasoning": "search first", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": CALL["id"], "name": "$web_search", "content": '{"a":1}'},
    ]
    return ChatRequest(model, messages, tools=[WEB_SEARCH_TOOL], **options)


def test_a_tool_call_turn_goes_back_unchanged_with_reasoning_and_no_empty_content():
    sent = body(tool_turn())["messages"]
    assert sent[1] == {"role": "assistant", "reasoning_content": "search first", "tool_calls": [CALL]}
    assert sent[2] == {"role": "tool", "tool_call_id": "$web_search:0", "name": "$web_search", "content": '{"a":1}'}


def test_preserved_thinking_adds_empty_reasoning_to_a_tool_call_turn_without_any():
    request = tool_turn()
    del request.messages[1]["reasoning"]
    assert body(request)["messages"][1]["reasoning_content"] == ""


def test_anthropic_format_sends_tool_use_and_tool_result_blocks():
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"北京"}'}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [call, {**call, "id": "toolu_2"}]},
        {"role": "tool", "tool_call_id": "toolu_1", "name": "get_weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "name": "get_weather", "content": "rain"},
    ]
    request = ChatRequest("kimi-k2", messages, tools=[fn("get_weather", description="Weather")], tool_choice="auto")
    sent = body(request, anthropic_format)
    assert sent["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}, "description": "Weather"}]
    assert sent["tool_choice"] == {"type": "auto"}
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "北京"},
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
        ],
    }


def test_anthropic_format_refuses_the_builtin_search():
    with pytest.raises(InvalidParameter, match="Web search is not available"):
        body(ask("kimi-k2", tools=[WEB_SEARCH_TOOL]), anthropic_format)


def test_collector_joins_interleaved_fragments_by_index():
    collector = ToolCallCollector()
    collector.add(1, id="b", name="$web_search", arguments='{"q"')
    collector.add(0, id="a", type="function", name="f", arguments="{")
    collector.add(1, arguments=':"x"}')
    collector.add(0, arguments="}")
    assert [(c.id, c.type, c.name, c.arguments) for c in collector.calls()] == [
        ("a", "function", "f", "{}"),
        ("b", "builtin_function", "$web_search", '{"q":"x"}'),
    ]


@pytest.mark.parametrize(
    "model, provider, expected",
    [
        ("kimi-k3", None, True),
        ("kimi-k2.6", None, True),
        ("moonshot-v1-8k", None, True),
        ("moonshot-v1-8k-vision-preview", None, False),
        ("kimi-k2", "kimi-k2.ai", False),
        ("gpt-4o", None, False),
    ],
)
def test_web_search_capability(model, provider, expected):
    assert model_capabilities(model, provider=provider)["web_search"] is expected
