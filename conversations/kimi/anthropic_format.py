"""The Anthropic Messages wire format (kimi-k2.ai ``/v1/messages``, Moonshot ``/anthropic/v1/messages``).

Same events out as the OpenAI format, so the rest of the app never knows which one is configured.
"""

from __future__ import annotations

import orjson

from conversations.kimi.error_mapping import error_from_response
from conversations.kimi.errors import BadResponse, InvalidParameter
from conversations.kimi.events import ContentDelta, Event, Finish, ReasoningDelta, Usage
from conversations.kimi.params import ChatRequest, ResolvedParams
from conversations.kimi.sse import SSEEvent

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
    messages = [_message(m) for m in request.messages if m.get("role") != "system"]
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
    body.update(request.extra)
    return body


def _message(message: dict) -> dict:
    role = message.get("role")
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
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.done = False
        self.finish_reason: str | None = None
        self._input = 0
        self._output = 0
        self._cached = 0
        self._seen_usage = False

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
            return self._piece(block.get("type"), block.get("text") or block.get("thinking"))
        elif kind == "content_block_delta":
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            kind = {"text_delta": "text", "thinking_delta": "thinking"}.get(delta.get("type"))
            return self._piece(kind, delta.get("text") if kind == "text" else delta.get("thinking"))
        elif kind == "message_delta":
            self._take_usage(payload.get("usage"))
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            reason = delta.get("stop_reason")
            if reason and self.finish_reason is None:
                self.finish_reason = STOP_REASONS.get(reason, str(reason))
                return [Finish(self.finish_reason)]
        elif kind == "message_stop":
            self.done = True
        return []  # ping, content_block_stop and unknown events carry nothing to show

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
