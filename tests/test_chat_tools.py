"""The tool loop's pure parts (conversations/services/chat/tools.py): the next request, the bounds, the
reservation it is sized for, the searches and their sources."""

import orjson
import pytest

from conversations.kimi.events import ToolCall, Usage
from conversations.kimi.params import ChatRequest
from conversations.kimi.tools import WEB_SEARCH_TOOL
from conversations.services.chat import tools


def search_call(query="kimi", tokens=1000, call_id="$web_search:1") -> ToolCall:
    arguments = orjson.dumps({"search_query": query, "usage": {"total_tokens": tokens}}).decode()
    return ToolCall(call_id, "builtin_function", "$web_search", arguments)


def loop(max_tokens=100) -> tools.ToolLoop:
    request = ChatRequest("kimi-k3", [{"role": "user", "content": "q"}], max_tokens=max_tokens, tools=[WEB_SEARCH_TOOL])
    result = tools.ToolLoop(request, prompt_tokens=10)
    result.begin_round("", "")
    return result


def test_follow_up_appends_the_round_unchanged_and_the_arguments_echoed(settings):
    settings.KIMICHAT_TOOL_MAX_ROUNDS = 4
    state = loop()
    state.completion_used = 30
    call = search_call()
    [search] = state.follow_up((call,), "Let me look.", "thinking…")
    assistant, result = state.request.messages[-2:]
    assert assistant == {
        "role": "assistant",
        "content": "Let me look.",
        "reasoning": "thinking…",
        "tool_calls": [call.as_dict()],
    }
    assert result == {"role": "tool", "tool_call_id": call.id, "name": "$web_search", "content": call.arguments}
    assert state.request.tools == [WEB_SEARCH_TOOL] and state.request.max_tokens == 70  # one shared budget
    assert (search.query, search.tokens, search.status) == ("kimi", 1000, "searching")


def test_only_the_rounds_own_text_goes_into_its_message(settings):
    state = loop()
    state.follow_up((search_call(),), "", "first")
    state.begin_round("", "first")
    state.follow_up((search_call(call_id="$web_search:2"),), "", "first second")
    assert state.request.messages[-2]["reasoning"] == " second"


@pytest.mark.parametrize(
    "setup, code",
    [
        (lambda s, st: setattr(st, "rounds", 4), "tool_rounds_exceeded"),
        (lambda s, st: setattr(st, "started", st.started - 1000), "tool_time_exceeded"),
        (lambda s, st: setattr(st, "completion_used", 100), "tool_budget_exceeded"),
    ],
)
def test_each_bound_has_its_code(settings, setup, code):
    settings.KIMICHAT_TOOL_MAX_ROUNDS = 4
    settings.KIMICHAT_TOOL_MAX_SECONDS = 60
    state = loop()
    setup(settings, state)
    with pytest.raises(tools.ToolBoundHit) as caught:
        state.follow_up((search_call(),), "", "")
    assert caught.value.code == code
    # The search the model asked for was charged by the provider: it is kept, as failed.
    assert [(s.query, s.status) for s in state.searches] == [("kimi", "failed")]


def test_search_tokens_beyond_the_reserved_allowance_stop_the_loop(settings):
    with pytest.raises(tools.ToolBoundHit) as caught:
        loop().follow_up((search_call(tokens=tools.SEARCH_TOKENS_ALLOWANCE + 1),), "", "")
    assert caught.value.code == "tool_budget_exceeded"


def test_the_reservation_covers_every_round(settings):
    settings.KIMICHAT_TOOL_MAX_ROUNDS = 3
    request = ChatRequest("kimi-k3", [{"role": "user", "content": "q"}], max_tokens=100, tools=[WEB_SEARCH_TOOL])
    assert tools.reservation_size(request, 10) == (3 * 10 + 2 * (100 + tools.SEARCH_TOKENS_ALLOWANCE), 3)
    request.tools = None
    assert tools.reservation_size(request, 10) == (10, 0)


@pytest.mark.parametrize("arguments", ["", "not json", "[1]", '{"usage": {"total_tokens": "many"}}'])
def test_a_call_with_odd_arguments_is_a_search_without_query_or_tokens(arguments):
    search = tools.search_from_call(ToolCall("id", "builtin_function", "$web_search", arguments))
    assert (search.query, search.tokens) == ("", 0)


def test_an_undeclared_tool_is_answered_with_an_error_the_model_can_read():
    content = tools.tool_result(ToolCall("id", "function", "rm_rf", "{}"))
    assert orjson.loads(content) == {"error": "unknown tool rm_rf"}


def test_sources_are_the_links_cited_once_each():
    text = "See [A](https://a.example/x) and [A again](https://a.example/x), [B](http://b.example). [no](ftp://c)"
    assert tools.sources_in(text) == [
        {"title": "A", "url": "https://a.example/x"},
        {"title": "B", "url": "http://b.example"},
    ]


def test_usage_of_rounds_adds_up():
    total = tools.add_usage(Usage(10, 2, 12, 1), Usage(20, 3, 23, 0))
    assert total == Usage(30, 5, 35, 1) and tools.add_usage(None, None) is None


def test_a_later_rounds_text_is_set_apart_and_its_own_text_excludes_the_break(settings):
    state = loop()
    assert state.separator("") == ""  # round one: nothing to set apart
    state.follow_up((search_call(),), "Let me check.", "")
    state.begin_round("Let me check.", "")
    gap = state.separator("Let me check.")
    assert gap == "\n\n" and state.separator("Let me check.\n\n") == ""  # once per round
    text = "Let me check." + gap + "Found it."
    assert state.round_text(text) == "Found it."
