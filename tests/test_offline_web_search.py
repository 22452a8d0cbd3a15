"""The offline server's $web_search round trip (conversations/offline/tools.py): the tool call it answers with, the
follow-ups it accepts and the ones it refuses (as a table), the answer that cites the results, and its faults."""

import copy
import json

import httpx
import pytest

from conversations.kimi.events import ContentDelta, Finish, ToolCallDelta, ToolCalls, Usage
from conversations.kimi.params import ChatRequest
from conversations.kimi.tokens import estimate_messages_locally
from conversations.kimi.tools import WEB_SEARCH_TOOL
from conversations.offline.tools import search_sources, search_tokens

QUESTION = "What happened in the Kimi world today? [[search:kimi k3 release]]"


def post(handle, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {handle.api_key}"}
    return httpx.post(handle.base_url + "/chat/completions", json=body, headers=headers, timeout=10)


def first_round(handle, model="kimi-k3", question=QUESTION) -> tuple[dict, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "tools": [WEB_SEARCH_TOOL]}
    reply = post(handle, body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    return body, choice["message"]


def follow_up(body: dict, message: dict) -> dict:
    call = message["tool_calls"][0]
    tool = {"role": "tool", "tool_call_id": call["id"], "name": "$web_search", "content": call["function"]["arguments"]}
    return {**body, "messages": [*body["messages"], message, tool]}


def test_the_first_round_is_a_search_call_with_query_and_tokens(offline_kimi):
    _body, message = first_round(offline_kimi)
    call = message["tool_calls"][0]
    assert call["type"] == "builtin_function" and call["function"]["name"] == "$web_search"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments["search_query"] == "kimi k3 release"
    assert arguments["usage"]["total_tokens"] == search_tokens("kimi k3 release")
    assert message["reasoning_content"]  # kimi-k3 thinks before it calls


def test_an_unchanged_follow_up_gets_an_answer_citing_the_results_with_the_search_tokens_as_prompt(offline_kimi):
    body, message = first_round(offline_kimi)
    again = follow_up(body, message)
    reply = post(offline_kimi, again)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    for source in search_sources("kimi k3 release"):
        assert f"[{source['title']}]({source['url']})" in choice["message"]["content"]
    expected = estimate_messages_locally(again["messages"]) + search_tokens("kimi k3 release")
    assert reply.json()["usage"]["prompt_tokens"] == expected


def _drop_reasoning(m, b):
    del m["reasoning_content"]


def _change_reasoning(m, b):
    m["reasoning_content"] += "!"


def _change_arguments(m, b):
    m["tool_calls"][0]["function"]["arguments"] = m["tool_calls"][0]["function"]["arguments"].replace(" ", "")[:-1]


def _change_content(m, b):
    m["content"] = "Let me search."


def _drop_tools(m, b):
    b["tools"] = [{"type": "function", "function": {"name": "other"}}]


CASES = {
    "reasoning dropped": (_drop_reasoning, None, "thinking is enabled but reasoning_content is missing"),
    "reasoning changed": (_change_reasoning, None, "reasoning_content of the assistant message at index 1 was changed"),
    "arguments changed": (_change_arguments, None, "tool_calls of the assistant message at index 1 were changed"),
    "content changed": (_change_content, None, "content of the assistant message at index 1 was changed"),
    "tools changed": (_drop_tools, None, "tools must be the same"),
    "no tool message": (None, lambda msgs: msgs[:-1], "did not have response messages"),
    "wrong tool_call_id": (None, lambda msgs: [*msgs[:-1], {**msgs[-1], "tool_call_id": "x:1"}], "x:1 is not found"),
    "wrong name": (None, lambda msgs: [*msgs[:-1], {**msgs[-1], "name": "search"}], "must have name $web_search"),
    "results not echoed": (
        None,
        lambda msgs: [*msgs[:-1], {**msgs[-1], "content": '{"search_query": "other"}'}],
        "must carry the call's arguments unchanged",
    ),
    "a call this server never made": (
        None,
        lambda msgs: [msgs[0], {**msgs[1], "tool_calls": [{**msgs[1]["tool_calls"][0], "id": "$web_search:forged"}]}],
        "$web_search:forged is not found",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_changed_follow_up_is_refused_with_400(offline_kimi, case):
    change_message, change_messages, expected = CASES[case]
    body, message = first_round(offline_kimi)
    message = copy.deepcopy(message)
    body = copy.deepcopy(body)
    if change_message:
        change_message(message, body)
    again = follow_up(body, message)
    if change_messages:
        again["messages"] = change_messages(again["messages"])
    reply = post(offline_kimi, again)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]


@pytest.mark.parametrize(
    "tools, expected",
    [
        ([WEB_SEARCH_TOOL, WEB_SEARCH_TOOL], "function name $web_search is duplicated"),
        ([{"type": "function", "function": {"name": "9lives"}}], "function name is invalid"),
        ([{"type": "builtin_function", "function": {"name": "$fetch"}}], "unknown builtin function $fetch"),
    ],
)
def test_bad_tools_are_refused(offline_kimi, tools, expected):
    reply = post(offline_kimi, {"model": "kimi-k3", "messages": [{"role": "user", "content": "hi"}], "tools": tools})
    assert reply.status_code == 400 and expected in reply.json()["error"]["message"]


def test_each_search_marker_takes_one_more_round(offline_kimi):
    body, message = first_round(offline_kimi, question="news [[search:one]] [[search:two]]")
    again = follow_up(body, message)
    reply = post(offline_kimi, again)
    second = reply.json()["choices"][0]
    assert second["finish_reason"] == "tool_calls"
    assert json.loads(second["message"]["tool_calls"][0]["function"]["arguments"])["search_query"] == "two"
    third = post(offline_kimi, follow_up(again, second["message"]))
    assert third.json()["choices"][0]["finish_reason"] == "stop"
    assert third.json()["usage"]["prompt_tokens"] > search_tokens("one") + search_tokens("two")


def test_without_the_builtin_declared_there_is_no_search(offline_kimi):
    reply = post(offline_kimi, {"model": "kimi-k3", "messages": [{"role": "user", "content": QUESTION}]})
    assert reply.json()["choices"][0]["finish_reason"] == "stop"


def test_search_error_fails_the_request_that_carries_the_results(offline_kimi):
    body, message = first_round(offline_kimi, question=QUESTION + " [[fault:search_error]]")
    reply = post(offline_kimi, follow_up(body, message))
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"


async def test_the_client_streams_the_call_split_across_events_and_parses_it(make_kimi_client, offline_kimi):
    client = make_kimi_client()
    request = ChatRequest("kimi-k3", [{"role": "user", "content": QUESTION}], tools=[WEB_SEARCH_TOOL])
    events = [event async for event in client.stream_chat(request)]
    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(fragments) > 3  # the arguments arrive in slices
    (calls,) = [e for e in events if isinstance(e, ToolCalls)]
    assert events[events.index(calls) + 1] == Finish("tool_calls")
    assert isinstance(events[-1], Usage)
    call = calls.calls[0]
    assert call.arguments == "".join(f.arguments for f in fragments)
    reasoning = "".join(e.text for e in events if type(e).__name__ == "ReasoningDelta")
    # The follow-up the client builds from the events is accepted as it is.
    messages = [
        *request.messages,
        {"role": "assistant", "content": "", "reasoning": reasoning, "tool_calls": [call.as_dict()]},
        {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": call.arguments},
    ]
    again = ChatRequest("kimi-k3", messages, tools=[WEB_SEARCH_TOOL])
    text = "".join([e.text async for e in client.stream_chat(again) if isinstance(e, ContentDelta)])
    assert search_sources("kimi k3 release")[0]["url"] in text


async def test_a_search_call_in_one_json_body_is_reported_the_same(make_kimi_client, offline_kimi):
    """A gateway that ignores stream=true answers one JSON body: its tool calls come out as the stream's would."""
    client = make_kimi_client()
    request = ChatRequest(
        "kimi-k3", [{"role": "user", "content": QUESTION + " [[fault:json_for_stream]]"}], tools=[WEB_SEARCH_TOOL]
    )
    events = [event async for event in client.stream_chat(request)]
    (calls,) = [e for e in events if isinstance(e, ToolCalls)]
    assert events[events.index(calls) + 1] == Finish("tool_calls")
    assert calls.calls[0].name == "$web_search"
    assert json.loads(calls.calls[0].arguments)["search_query"] == "kimi k3 release"
