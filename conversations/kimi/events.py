"""What a streaming Kimi call yields, whatever the provider's wire format (OpenAI- or Anthropic-style)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """The response headers that matter; yielded first, as soon as the upstream answered 200."""

    request_id: str = ""
    rate_limit: dict[str, str] = field(default_factory=dict)  # X-RateLimit-* as sent
    credits_remaining: str = ""  # X-Credits-Remaining (kimi-k2.ai)


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # stop, length, tool_calls, content_filter, or whatever the provider sent


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


Event = ResponseMeta | ContentDelta | ReasoningDelta | Finish | Usage
