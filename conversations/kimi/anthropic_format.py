"""The Anthropic Messages wire format (kimi-k2.ai ``/v1/messages``, Moonshot ``/anthropic/v1/messages``).

Same events out as the OpenAI format, so the rest of the app never knows which one is configured.
"""

from __future__ import annotations

import orjson

from conversations.kimi.error_mapping import error_from_response
from conversations.kimi.errors import BadResponse, InvalidParameter
from conversations.kimi.events import (
    ContentDelta,
    Event,
    Finish,
    Pieces,
    ReasoningDelta,
    ToolCall,
    ToolCallDelta,
    ToolCalls,
    Usage,
)
from conversations.kimi.params import ChatRequest, ResolvedParams
from conversations.kimi.sse import SSEEvent
from conversations.kimi.tools import BUILTINS, ToolCallCollector

PATH = "/messages"
DEFAULT_MAX_TOKENS = 4096  # the format requires max_tokens
# Anthropic's Messages API refuses thinking.budget_tokens below 1,024 or not below max_tokens; Kimi's /messages
# endpoints do not document their own floor [notes §17 ?], so the stricter rule is kept.
THINKING_BUDGET_MIN = 1024
ANTHROPIC_VERSION = "2023-06-01"
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def auth_headers(api_key: str) -> dict[str, str]:
    # kimi-k2.ai documents X-API-Key for /messages; Moonshot's endpoint takes either. Both are sent.
    return {"X-API-Key": api_key, "Authorization": f"Bearer {api_key}", "anthropic-version": ANTHROPIC_VERSION}


def build_body(request: ChatRequest, params: ResolvedParams, *, stream: bool) -> dict:
    if params.json_mode:
        raise InvalidParameter("JSON mode is not available with the Anthropic-format API.")
    if params.n:
        raise InvalidParameter("Several answers per request (n > 1) are not available with the Anthropic-format API.")
    system = [str(m.get("content") or "") for m in request.messages if m.get("role") == "system"]
    max_tokens = params.max_tokens or DEFAULT_MAX_TOKENS
    messages = _messages([m for m in request.messages if m.get("role") != "system"])
    if params.continue_from is not None:
        messages.append({"role": "assistant", "content": params.continue_from})  # the format's prefill
    body: dict = {
        "model": request.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.thinking is False:
        body["thinking"] = {"type": "disabled"}
    elif params.thinking and max_tokens > THINKING_BUDGET_MIN:
        # With no room for the minimum budget the field is left out: these models think by default anyway.
        body["thinking"] = {"type": "enabled", "budget_tokens": max(THINKING_BUDGET_MIN, max_tokens // 2)}
    if params.tools:
        body["tools"] = [_tool(t) for t in params.tools]
        if params.tool_choice is not None:
            body["tool_choice"] = _tool_choice(params.tool_choice)
    body.update(request.extra)
    return body


def _tool(tool: dict) -> dict:
    function = tool["function"]
    if function["name"] in BUILTINS:
        # No Anthropic-format shape of the built-in search is documented [notes §8, §17 ?].
        raise InvalidParameter("Web search is not available with the Anthropic-format API.")
    out = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice) -> dict:
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return {"type": {"required": "any"}.get(choice, choice)}


def _messages(messages: list[dict]) -> list[dict]:
    """Assistant tool calls become ``tool_use`` blocks; the tool results after them one user turn of
    ``tool_result`` blocks (the format wants them together, right after the call)."""
    out: list[dict] = []
    for message in messages:
        if message.get("role") == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": str(message.get("content") or ""),
            }
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list) and last.get("_tool_results"):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_tool_results": True})
            continue
        out.append(_message(message))
    for message in out:
        message.pop("_tool_results", None)
    return out


def _message(message: dict) -> dict:
    role = message.get("role")
    if role == "assistant" and message.get("tool_calls"):
        blocks: list[dict] = []
        if message.get("reasoning"):
            blocks.append({"type": "thinking", "thinking": message["reasoning"]})
        if message.get("content"):
            blocks.append({"type": "text", "text": message["content"]})
        for call in message["tool_calls"]:
            function = call.get("function") or {}
            try:
                arguments = orjson.loads(function.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                raise InvalidParameter("A tool call's arguments are not JSON.") from None
            blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
        return {"role": "assistant", "content": blocks}
    content = message.get("content") or ""
    if role == "assistant" and message.get("reasoning"):
        return {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": message["reasoning"]}, {"type": "text", "text": content}],
        }
    return {"role": role, "content": content}


def _usage(input_tokens: int, output_tokens: int, cached: int) -> Usage:
    return Usage(input_tokens, output_tokens, input_tokens + output_tokens, cached)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StreamParser:
    def __init__(self) -> None:
        self.text = Pieces()  # what arrived, so a failure can carry it
        self.reasoning = Pieces()
        self.done = False
        self.finish_reason: str | None = None
        self._input = 0
        self._output = 0
        self._cached = 0
        self._seen_usage = False
        self.tool_calls = ToolCallCollector()

    def feed(self, sse: SSEEvent) -> list[Event]:
        try:
            payload = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            raise BadResponse(detail=f"non-JSON data line ({len(sse.data)} chars)")
        if not isinstance(payload, dict):
            raise BadResponse(detail="data line is JSON but not an object")
        kind = payload.get("type") or sse.event
        if kind == "error" or payload.get("error"):
            raise error_from_response(None, payload)
        if kind == "message_start":
            message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
            self._take_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = payload.get("content_block") if isinstance(payload.get("content_block"), dict) else {}
            if block.get("type") == "tool_use":
                return self._tool_use_start(payload.get("index"), block)
            return self._piece(block.get("type"), block.get("text") or block.get("thinking"))
        elif kind == "content_block_delta":
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            if delta.get("type") == "input_json_delta":
                return self._tool_use_fragment(payload.get("index"), delta.get("partial_json"))
            kind = {"text_delta": "text", "thinking_delta": "thinking"}.get(delta.get("type"))
            return self._piece(kind, delta.get("text") if kind == "text" else delta.get("thinking"))
        elif kind == "message_delta":
            self._take_usage(payload.get("usage"))
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            reason = delta.get("stop_reason")
            if reason and self.finish_reason is None:
                self.finish_reason = STOP_REASONS.get(reason, str(reason))
                if self.finish_reason == "tool_calls":
                    if not self.tool_calls:
                        raise BadResponse(detail="stop_reason tool_use without a tool_use block")
                    return [ToolCalls(self.tool_calls.calls()), Finish(self.finish_reason)]
                return [Finish(self.finish_reason)]
        elif kind == "message_stop":
            self.done = True
        return []  # ping, content_block_stop and unknown events carry nothing to show

    def _tool_use_start(self, index: object, block: dict) -> list[Event]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise BadResponse(detail="tool_use block without an index")
        name = block.get("name") if isinstance(block.get("name"), str) else ""
        fields = {
            "id": block.get("id") if isinstance(block.get("id"), str) else "",
            "type": "builtin_function" if name in BUILTINS else "function",
            "name": name,
            # The input usually streams as input_json_delta from an empty {}; a complete input here is kept.
            "arguments": orjson.dumps(block["input"]).decode() if block.get("input") else "",
        }
        self.tool_calls.add(index, **fields)
        return [ToolCallDelta(index, **fields)]

    def _tool_use_fragment(self, index: object, fragment: object) -> list[Event]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise BadResponse(detail="input_json_delta without an index")
        if not isinstance(fragment, str) or not fragment:
            return []
        self.tool_calls.add(index, arguments=fragment)
        return [ToolCallDelta(index, arguments=fragment)]

    def _piece(self, kind: object, value: object) -> list[Event]:
        if not isinstance(value, str) or not value:
            return []
        if kind == "text":
            self.text.append(value)
            return [ContentDelta(value)]
        if kind == "thinking":
            self.reasoning.append(value)
            return [ReasoningDelta(value)]
        return []

    def _take_usage(self, value: object) -> None:
        # message_start carries input_tokens; message_delta carries the cumulative output_tokens (and sometimes input).
        if not isinstance(value, dict):
            return
        self._seen_usage = True
        self._input = _int(value.get("input_tokens")) or self._input
        self._output = _int(value.get("output_tokens")) or self._output
        self._cached = _int(value.get("cache_read_input_tokens")) or self._cached

    def usage(self) -> Usage | None:
        return _usage(self._input, self._output, self._cached) if self._seen_usage else None


def parse_completion(payload: object) -> tuple[str, str, str, Usage | None]:
    if not isinstance(payload, dict):
        raise BadResponse(detail="message is not a JSON object")
    if payload.get("type") == "error" or payload.get("error"):
        raise error_from_response(None, payload)
    blocks = payload.get("content")
    if not isinstance(blocks, list):
        raise BadResponse(detail="message without content blocks")
    text = "".join(str(b.get("text") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    reasoning = "".join(
        str(b.get("thinking") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "thinking"
    )
    reason = payload.get("stop_reason") or ""
    usage = payload.get("usage")
    parsed = (
        _usage(
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            _int(usage.get("cache_read_input_tokens")),
        )
        if isinstance(usage, dict)
        else None
    )
    return text, reasoning, STOP_REASONS.get(reason, str(reason)), parsed


def completion_tool_calls(payload: dict) -> tuple[ToolCall, ...]:
    """The ``tool_use`` blocks of a non-streaming answer."""
    blocks = [b for b in payload.get("content") or [] if isinstance(b, dict) and b.get("type") == "tool_use"]
    return tuple(
        ToolCall(
            str(b.get("id") or ""),
            "builtin_function" if b.get("name") in BUILTINS else "function",
            str(b.get("name") or ""),
            orjson.dumps(b.get("input") or {}).decode(),
        )
        for b in blocks
    )
