"""The OpenAI-compatible chat wire format (Moonshot, Ace Data Cloud, kimi-k2.ai ``/chat/completions``)."""

from __future__ import annotations

import orjson

from conversations.kimi.error_mapping import error_from_response
from conversations.kimi.errors import BadResponse
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
from conversations.kimi.tools import ToolCallCollector

PATH = "/chat/completions"


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def build_body(request: ChatRequest, params: ResolvedParams, *, stream: bool) -> dict:
    messages = [_message(m, params.preserve_reasoning) for m in request.messages]
    if params.continue_from is not None:
        # Partial mode [doc: partial]: the answer so far is the last message and the reply is only what follows.
        messages.append(
            _message({"role": "assistant", "content": params.continue_from, "partial": True}, params.preserve_reasoning)
        )
    body: dict = {"model": request.model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p", "n"):
        value = getattr(params, name)
        if value is not None:
            body[name] = value
    if params.max_tokens is not None:
        body[params.output_field] = params.max_tokens
    if params.json_mode:
        body["response_format"] = {"type": "json_object"}
    if params.thinking is not None:
        thinking = {"type": "enabled" if params.thinking else "disabled"}
        if params.thinking and params.thinking_keep:
            thinking["keep"] = "all"
        body["thinking"] = thinking
    if params.reasoning_effort is not None:
        body["reasoning_effort"] = params.reasoning_effort
    if params.prompt_cache_key:
        body["prompt_cache_key"] = params.prompt_cache_key
    if params.tools:
        body["tools"] = params.tools
        if params.tool_choice is not None:
            body["tool_choice"] = params.tool_choice
    body.update(request.extra)
    return body


def _message(message: dict, preserve_reasoning: bool = False) -> dict:
    out = {k: v for k, v in message.items() if k != "reasoning"}
    if message.get("role") == "assistant":
        reasoning = message.get("reasoning")
        if reasoning is None:
            reasoning = message.get("reasoning_content")
        # Preserved Thinking (k3, k2.7, k2.6 with keep=all) requires the field on every earlier assistant turn, ""
        # when there was none [doc: spec; seen: kimi-cli]; other models ignore it, so send it only when known.
        if preserve_reasoning:
            out["reasoning_content"] = reasoning if isinstance(reasoning, str) else ""
        elif reasoning:
            out["reasoning_content"] = reasoning
        if out.get("tool_calls") and not out.get("content"):
            out.pop("content", None)  # no empty text part beside tool calls [seen: kimi-cli]
    return out


def parse_usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = _int(value.get("prompt_tokens"))
    completion = _int(value.get("completion_tokens"))
    cached = _int(value.get("cached_tokens"))
    details = value.get("prompt_tokens_details")
    if not cached and isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
    total = _int(value.get("total_tokens")) or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, cached_tokens=cached)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StreamParser:
    """Turns decoded SSE events into typed events; remembers what arrived so a failure can carry it."""

    def __init__(self) -> None:
        self.text = Pieces()  # what arrived, so a failure can carry it
        self.reasoning = Pieces()
        self.done = False
        self.finish_reason: str | None = None
        self._top_usage: Usage | None = None
        self._choice_usage: dict[int, Usage] = {}
        self.tool_calls = ToolCallCollector()

    def feed(self, sse: SSEEvent) -> list[Event]:
        data = sse.data.strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BadResponse(detail=f"non-JSON data line ({len(data)} chars)")
        if not isinstance(payload, dict):
            raise BadResponse(detail="data line is JSON but not an object")
        if payload.get("error"):
            raise error_from_response(None, payload)
        usage = parse_usage(payload.get("usage"))
        if usage is not None:
            self._top_usage = usage
        events: list[Event] = []
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            choice_usage = parse_usage(choice.get("usage"))
            if choice_usage is not None:
                self._choice_usage[index] = choice_usage
            if index != 0:
                continue  # one answer is shown; other choices only count towards usage
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content")
                if isinstance(reasoning, str) and reasoning:
                    self.reasoning.append(reasoning)
                    events.append(ReasoningDelta(reasoning))
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self.text.append(content)
                    events.append(ContentDelta(content))
                events += self._tool_call_deltas(delta.get("tool_calls"))
            reason = choice.get("finish_reason")
            if reason and self.finish_reason is None:
                self.finish_reason = str(reason)
                if self.finish_reason == "tool_calls":
                    if not self.tool_calls:
                        raise BadResponse(detail="finish_reason tool_calls without any tool call")
                    events.append(ToolCalls(self.tool_calls.calls()))
                events.append(Finish(self.finish_reason))
        return events

    def _tool_call_deltas(self, value: object) -> list[Event]:
        # Keyed by index: the first fragment of a call has id, type and name, later ones only an arguments slice
        # [doc: spec; seen: kimi-cli]; calls may interleave.
        events: list[Event] = []
        for item in value if isinstance(value, list) else ():
            if not isinstance(item, dict):
                continue
            index = item.get("index")
            if isinstance(index, bool) or not isinstance(index, int):
                raise BadResponse(detail="tool call fragment without an index")
            function = item.get("function") if isinstance(item.get("function"), dict) else {}
            fields = {
                "id": item.get("id") if isinstance(item.get("id"), str) else "",
                "type": item.get("type") if isinstance(item.get("type"), str) else "",
                "name": function.get("name") if isinstance(function.get("name"), str) else "",
                "arguments": function.get("arguments") if isinstance(function.get("arguments"), str) else "",
            }
            self.tool_calls.add(index, **fields)
            events.append(ToolCallDelta(index, **fields))
        return events

    def usage(self) -> Usage | None:
        """The top-level usage when sent (it covers every choice), else the per-choice usage added up once."""
        if self._top_usage is not None:
            return self._top_usage
        if not self._choice_usage:
            return None
        parts = list(self._choice_usage.values())
        prompt = parts[0].prompt_tokens  # the same prompt for every choice
        completion = sum(u.completion_tokens for u in parts)
        return Usage(prompt, completion, prompt + completion, parts[0].cached_tokens)


def parse_completion(payload: object) -> tuple[str, str, str, Usage | None]:
    """(text, reasoning, finish_reason, usage) of a non-streaming answer."""
    if not isinstance(payload, dict):
        raise BadResponse(detail="completion is not a JSON object")
    if payload.get("error"):
        raise error_from_response(None, payload)
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadResponse(detail="completion without choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    usage = parse_usage(payload.get("usage")) or parse_usage(choice.get("usage"))
    return (
        str(message.get("content") or ""),
        str(message.get("reasoning_content") or ""),
        str(choice.get("finish_reason") or ""),
        usage,
    )


def completion_tool_calls(payload: dict) -> tuple[ToolCall, ...]:
    """The ``message.tool_calls`` of a non-streaming answer (a gateway that ignored ``stream``)."""
    choice = payload["choices"][0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    collector = ToolCallCollector()
    for index, call in enumerate(c for c in calls if isinstance(c, dict)):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        collector.add(
            index,
            id=str(call.get("id") or ""),
            type=str(call.get("type") or ""),
            name=str(function.get("name") or ""),
            arguments=function.get("arguments") if isinstance(function.get("arguments"), str) else "",
        )
    return collector.calls()
