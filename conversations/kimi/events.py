"""What a streaming Kimi call yields, whatever the provider's wire format (OpenAI- or Anthropic-style)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """The response headers that matter; yielded first, as soon as the upstream answered 200."""

    request_id: str = ""
    rate_limit: dict[str, str] = field(default_factory=dict)  # X-RateLimit-* as sent
    credits_remaining: str = ""  # X-Credits-Remaining (kimi-k2.ai)


def _storable(text: str) -> str:
    """U+0000 becomes U+FFFD: PostgreSQL cannot store a NUL, and an upstream that sends one must not make the
    answer's final store fail. Done here, where every provider's text enters, so no later step ever sees one."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class Pieces:
    """An answer's text as it streams in: appended piece by piece, read whole (``"".join(pieces)``, ``str``).

    Every ``GROUP`` pieces are joined into one string. A piece kept as a string of its own costs a str object (~50
    bytes besides its text): an answer of 600 pieces held 34 KB in the stream's parser where its text was a few
    (tracemalloc, docs/performance.md, issue 23, session 11). Joining as it goes keeps the text and a string per
    ``GROUP`` pieces; the cost is linear."""

    GROUP = 64
    __slots__ = ("_joined", "_recent")

    def __init__(self) -> None:
        self._joined: list[str] = []
        self._recent: list[str] = []

    def append(self, piece: str) -> None:
        self._recent.append(piece)
        if len(self._recent) >= self.GROUP:
            self._joined.append("".join(self._recent))
            self._recent = []

    def __iter__(self):
        yield from self._joined
        yield from self._recent

    def __bool__(self) -> bool:
        return bool(self._joined or self._recent)

    def __str__(self) -> str:
        return "".join(self)


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _storable(self.text))


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _storable(self.text))


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # stop, length, tool_calls, content_filter, or whatever the provider sent


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call as it streams: the first of an ``index`` carries id, type and name, later ones only
    a slice of the arguments (a JSON string cut anywhere)."""

    index: int
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    type: str  # "function", or "builtin_function" for $web_search
    name: str
    arguments: str  # a JSON string, exactly as the provider sent it (echoed back unchanged for $web_search)

    def as_dict(self) -> dict:
        """The call as an assistant message's ``tool_calls`` entry."""
        return {"id": self.id, "type": self.type, "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """The complete calls of an answer that ended with ``finish_reason: tool_calls``; yielded just before its
    ``Finish``."""

    calls: tuple[ToolCall, ...]


Event = ResponseMeta | ContentDelta | ReasoningDelta | ToolCallDelta | ToolCalls | Finish | Usage
