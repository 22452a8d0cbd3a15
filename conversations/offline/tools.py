"""Tool calls on the offline server: the built-in ``$web_search`` round trip, emulated step by step
(/work/shared/kimi-api-notes.md §7, §8 [doc: websearch]).

1. A request that declares ``{"type": "builtin_function", "function": {"name": "$web_search"}}`` and whose last user
   message holds ``[[search:QUERY]]`` is answered with ``finish_reason: "tool_calls"``: one ``$web_search`` call whose
   ``arguments`` (a JSON string, streamed in slices across events) carry ``search_query`` and
   ``usage.total_tokens``, the tokens the results will add to the next prompt (other keys [?]).
2. The follow-up must hold that assistant message unchanged (content, ``reasoning_content`` when the model thinks,
   ``tool_calls`` byte for byte), then a ``tool`` message with the call's ``tool_call_id``, ``name: "$web_search"``
   and the arguments re-serialised unchanged as ``content``, and the same ``tools``; anything else is a 400
   ``invalid_request_error`` (messages marked [?] are this server's wording).
3. Each further ``[[search:...]]`` takes one more round; when all are answered, the reply is the answer, citing the
   deterministic "results" (titles and URLs) in its text, with the search tokens counted as prompt tokens.

Faults: ``search_error`` (the request carrying results fails with 500 ``server_error``) and ``search_timeout:S``
(that request waits S seconds before answering).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson

from conversations.offline import answers, directives, wire
from conversations.offline.catalogue import thinks
from conversations.offline.planning import Plan
from conversations.offline.replies import Chat, pace
from conversations.offline.transport import Response

WEB_SEARCH = "$web_search"
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_]{0,255}$")
ARGUMENT_SLICE = 7  # characters of the arguments per streamed fragment
_SITES = (("News", "news.example.org"), ("Encyclopedia", "wiki.example.org"), ("Blog", "blog.example.net"))
_REASONING = "The user wants fresh information about {query}. I should search the web first. "
MEMORY_LIMIT = 10_000  # calls remembered (oldest forgotten first)


def _bad(message: str) -> wire.ErrorReply:
    return wire.openai_error(400, "invalid_request_error", message)


def search_tokens(query: str) -> int:
    """What the results of ``query`` add to the next prompt: deterministic, of a realistic size [?]."""
    return 1200 + 8 * len(query)


def search_sources(query: str) -> list[dict]:
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:40] or "search"
    return [{"title": f"{query} - {site}", "url": f"https://{domain}/{slug}"} for site, domain in _SITES]


@dataclass
class _Sent:
    message: dict  # the assistant message as this server sent it
    tools: list  # the tools of the request it answered


class ToolMemory:
    """The tool calls this server made, by id, so a follow-up can be checked against what was really sent."""

    def __init__(self) -> None:
        self._sent: dict[str, _Sent] = {}
        self._lock = threading.Lock()

    def remember(self, call_id: str, message: dict, tools: list) -> None:
        with self._lock:
            if len(self._sent) >= MEMORY_LIMIT:
                self._sent.pop(next(iter(self._sent)))
            self._sent[call_id] = _Sent(message, tools)

    def get(self, call_id: str) -> _Sent | None:
        with self._lock:
            return self._sent.get(call_id)


@dataclass
class Turn:
    """What a request with tools gets: a search call to make now (``query``), or the answer after ``answered``."""

    query: str | None = None
    answered: list[str] = field(default_factory=list)  # the queries whose results the history carries

    @property
    def tokens(self) -> int:
        return sum(search_tokens(q) for q in self.answered)


def check_tools(body: dict) -> wire.ErrorReply | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _bad("Invalid request: tools must be a list")  # [?]
    names = set()
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "builtin_function":
            if name != WEB_SEARCH:
                return _bad(f"Invalid request: unknown builtin function {name}")  # [?]
        elif kind != "function" or not isinstance(name, str) or not NAME.match(name):
            return _bad(f"Invalid request: function name is invalid, must match {NAME.pattern}: {name}")  # [?]
        if name in names:
            return _bad(f"Invalid request: function name {name} is duplicated")  # [doc: kc-err] wording [?]
        names.add(name)
    return None


def declares_search(body: dict) -> bool:
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    return any(isinstance(t, dict) and t.get("type") == "builtin_function" for t in tools)


def turn(body: dict, messages: list[dict], found: directives.Directives, memory: ToolMemory) -> Turn | wire.ErrorReply:
    """Check the tool-call turns in ``messages`` against what this server sent; decide what comes next."""
    result = Turn()
    pending: dict[str, dict] = {}  # tool_call_id -> call, waiting for its tool message
    for index, message in enumerate(messages):
        role = message.get("role")
        if pending and role != "tool":
            return _unanswered(pending)
        if role == "assistant" and message.get("tool_calls"):
            refusal = _check_call_message(body, message, index, memory)
            if refusal is not None:
                return refusal
            pending = {call["id"]: call for call in message["tool_calls"]}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            call = pending.pop(call_id, None) if isinstance(call_id, str) else None
            if call is None:
                return _bad(f"Invalid request: tool_call_id {call_id} is not found")  # [seen]
            refusal = _check_result(message, call, index)
            if refusal is not None:
                return refusal
            if call["function"]["name"] == WEB_SEARCH:
                result.answered.append(orjson.loads(call["function"]["arguments"]).get("search_query", ""))
    if pending:
        return _unanswered(pending)
    if declares_search(body) and len(result.answered) < len(found.searches):
        result.query = found.searches[len(result.answered)]
    return result


def _unanswered(pending: dict) -> wire.ErrorReply:
    return _bad(  # OpenAI's wording; Moonshot's is unknown [?]
        "Invalid request: an assistant message with 'tool_calls' must be followed by tool messages responding to "
        f"each 'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}"
    )


def _check_call_message(body: dict, message: dict, index: int, memory: ToolMemory) -> wire.ErrorReply | None:
    calls = message["tool_calls"]
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in calls):
        return _bad(f"Invalid request: tool_calls of the message at index {index} are malformed")  # [?]
    sent = memory.get(calls[0]["id"])
    if sent is None:
        return _bad(f"Invalid request: tool_call_id {calls[0]['id']} is not found")  # [seen]
    original = sent.message
    if calls != original["tool_calls"]:
        return _bad(f"Invalid request: the tool_calls of the assistant message at index {index} were changed")  # [?]
    if (message.get("content") or "") != (original.get("content") or ""):
        return _bad(f"Invalid request: the content of the assistant message at index {index} was changed")  # [?]
    if "reasoning_content" in original and message.get("reasoning_content") != original["reasoning_content"]:
        if not isinstance(message.get("reasoning_content"), str):
            return _bad(  # [doc: kc-err]
                f"thinking is enabled but reasoning_content is missing in assistant tool call message at index {index}"
            )
        return _bad(f"Invalid request: the reasoning_content of the assistant message at index {index} was changed")
    if body.get("tools") != sent.tools:
        return _bad("Invalid request: tools must be the same as in the request that made the tool call")  # [?]
    return None


def _check_result(message: dict, call: dict, index: int) -> wire.ErrorReply | None:
    name = call["function"]["name"]
    if message.get("name") != name:
        return _bad(f"Invalid request: the tool message at index {index} must have name {name}")  # [?]
    if name != WEB_SEARCH:
        return None
    content = message.get("content")
    try:
        echoed = orjson.loads(content) if isinstance(content, str) else None
    except orjson.JSONDecodeError:
        echoed = None
    if echoed != orjson.loads(call["function"]["arguments"]):
        return _bad(  # [?]
            f"Invalid request: the $web_search tool message at index {index} must carry the call's arguments unchanged"
        )
    return None


# --- replies ---------------------------------------------------------------------------------------------------


def make_call(query: str, model: str, body: dict) -> tuple[dict, list[str]]:
    """The call (as the message's ``tool_calls`` entry) and the reasoning pieces that precede it."""
    search_id = hashlib.sha256(query.encode()).hexdigest()[:16]
    usage = {"total_tokens": search_tokens(query)}
    arguments = wire.dumps({"search_result": {"search_id": search_id}, "search_query": query, "usage": usage}).decode()
    call = {
        "id": f"{WEB_SEARCH}:{uuid.uuid4().hex[:12]}",
        "type": "builtin_function",
        "function": {"name": WEB_SEARCH, "arguments": arguments},
    }
    reasoning = answers.split_pieces(_REASONING.format(query=query)) if thinks(model, body) else []
    return call, reasoning


async def stream_call(chat: Chat, response: Response, query: str, memory: ToolMemory, prior_tokens: int) -> None:
    """Step 1: ``finish_reason: tool_calls``, the call's arguments split over several events."""
    call, reasoning = make_call(query, chat.model, chat.body)
    arguments = call["function"]["arguments"]
    slices = [arguments[i : i + ARGUMENT_SLICE] for i in range(0, len(arguments), ARGUMENT_SLICE)]
    message = {"role": "assistant", "content": "", "tool_calls": [call]}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    memory.remember(call["id"], message, chat.body.get("tools"))
    framer = wire.Framer(chat.directives.faults)
    base = {"id": "chatcmpl-" + chat.request_id, "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = chat.model
    plan: Plan = chat.plan
    prompt = plan.prompt_tokens + prior_tokens
    completion = len(reasoning) + len(slices)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def send(payload) -> None:
        await response.chunk(framer.event(payload))

    def chunk(delta: dict, **choice) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, **choice}]}

    record = response.record
    if not chat.stream:
        payload = {**base, "object": "chat.completion"}
        payload["choices"] = [{"index": 0, "message": message, "finish_reason": "tool_calls"}]
        payload["usage"] = usage
        record.sent_reasoning = message.get("reasoning_content", "")
        record.completed = True
        await response.whole(200, wire.dumps(payload), "application/json", chat.headers)
        return
    await response.start_chunked(200, "text/event-stream; charset=utf-8", chat.headers)
    await send(chunk({"role": "assistant", "content": ""}))
    started, sent = time.monotonic(), 0
    for piece in reasoning:
        await send(chunk({"reasoning_content": piece}))
        record.sent_reasoning += piece
        sent += 1
        await pace(started, sent, chat.rate)
    head = {"index": 0, "id": call["id"], "type": "builtin_function"}
    await send(chunk({"tool_calls": [{**head, "function": {"name": WEB_SEARCH, "arguments": ""}}]}))
    for piece in slices:
        await send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        sent += 1
        await pace(started, sent, chat.rate)
    await send(chunk({}, finish_reason="tool_calls", usage=usage))
    if chat.include_usage:
        await send({**base, "choices": [], "usage": usage})
    record.completed = True
    await send("[DONE]")
    await response.end_chunked()


def cite(plan: Plan, answered: list[str]) -> None:
    """Step 3: the answer cites every search's results; their tokens are prompt tokens of this request."""
    lines = [f"## What the web says about {answered[-1]}\n\n"]
    for query in answered:
        first, second = search_sources(query)[:2]
        lines.append(
            f"According to [{first['title']}]({first['url']}) and [{second['title']}]({second['url']}), "
            f"here is the latest on {query}.\n\n"
        )
    lines.append("**Sources**\n\n")
    number = 0
    for query in answered:
        for source in search_sources(query):
            number += 1
            lines.append(f"{number}. [{source['title']}]({source['url']})\n")
    content = answers.split_pieces("".join(lines))
    room = max(0, plan.budget - len(plan.reasoning))
    plan.finish = "stop" if len(content) <= room else "length"
    plan.content = content[:room]
    plan.prompt_tokens += sum(search_tokens(q) for q in answered)
