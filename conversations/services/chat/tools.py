"""The tool loop of one answer, its pure parts (docs/tools.md). ``registry.GenerationRegistry._run`` drives it.

An answer with web search on is one message and one seq stream, however many upstream calls it takes:

1. the request declares the built-in ``$web_search``; the model may answer ``finish_reason: "tool_calls"``;
2. ``ToolLoop.follow_up`` appends that assistant message unchanged (its content, its reasoning, its ``tool_calls``)
   and one ``tool`` message per call (for ``$web_search``: the arguments echoed back unchanged [notes §8]), and
   gives the next request (same ``tools``, the output budget that is left);
3. until the model stops, or a bound is hit: ``TOOL_MAX_ROUNDS`` upstream calls, ``TOOL_MAX_SECONDS`` since the
   answer started (``ToolBoundHit`` with its code), or the credits reserved for the answer.

Credits: the answer's reservation covers every round the loop may run — the prompt sent again each round, the earlier
rounds' output and a search-result allowance per search as prompt tokens, the one output budget the rounds share, and
the fee of every search (``reservation_size``). Before each further round ``ToolLoop.follow_up`` checks that what the
rounds can cost stays inside it, with the search tokens the provider reported.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal

import orjson
from django.conf import settings
from django.utils.translation import gettext as _

from conversations.kimi.configured import get_client
from conversations.kimi.events import ToolCall, Usage
from conversations.kimi.params import ChatRequest, supports_web_search
from conversations.kimi.tools import WEB_SEARCH, WEB_SEARCH_TOOL

# Tokens a search's results are assumed to add to the prompt when credits are reserved; the real number comes back in
# the call's arguments (usage.total_tokens) and is checked against the reservation before the next round [?].
SEARCH_TOKENS_ALLOWANCE = 8_000
_LINK = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^)\s]{1,2000})\)")
MAX_SOURCES = 20


class ToolBoundHit(Exception):
    """The loop must end here: ``code`` says which bound (docs/websocket-protocol.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def web_search_refusal(model: str) -> str:
    """Why ``model`` cannot search the web here ("" when it can)."""
    client = get_client()
    if client.api_format != "openai" or not supports_web_search(model, client.provider):
        return _("%(model)s does not offer web search with this Kimi provider.") % {"model": model}
    return ""


def search_tools(web_search: bool) -> list[dict] | None:
    return [dict(WEB_SEARCH_TOOL)] if web_search else None


def uses_tools(request: ChatRequest) -> bool:
    return bool(request.tools)


def max_rounds() -> int:
    return settings.KIMICHAT_TOOL_MAX_ROUNDS


def reservation_size(request: ChatRequest, prompt_tokens: int) -> tuple[int, int]:
    """(prompt tokens, searches) to reserve credits for, besides the one output budget the rounds share."""
    if not uses_tools(request):
        return prompt_tokens, 0
    extra_rounds = max_rounds() - 1
    budget = request.max_tokens or 0
    # Every round may end in a search call, and each is charged, also the last one's that no round follows.
    return prompt_tokens * max_rounds() + extra_rounds * (budget + SEARCH_TOKENS_ALLOWANCE), max_rounds()


@dataclass
class Search:
    query: str
    call_id: str
    tokens: int = 0  # what its results add to the next prompt, as the provider reported
    status: str = "searching"  # "searching" | "done" | "failed"
    sources: list[dict] = field(default_factory=list)  # [{title, url}] the answer cited after it

    def as_dict(self) -> dict:
        return {"query": self.query, "status": self.status, "tokens": self.tokens, "sources": self.sources}


def search_from_call(call: ToolCall) -> Search:
    try:
        arguments = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        arguments = {}
    arguments = arguments if isinstance(arguments, dict) else {}
    usage = arguments.get("usage") if isinstance(arguments.get("usage"), dict) else {}
    tokens = usage.get("total_tokens")
    query = arguments.get("search_query") or arguments.get("query") or ""  # the key is undocumented [?]
    return Search(
        query=str(query)[:500],
        call_id=call.id,
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0,
    )


def tool_result(call: ToolCall) -> str:
    """The ``tool`` message's content: for ``$web_search`` the arguments unchanged (Moonshot searches on receiving
    them [notes §8]); no other tool is declared, so any other name is answered with an error the model can read."""
    if call.name == WEB_SEARCH:
        return call.arguments
    return orjson.dumps({"error": f"unknown tool {call.name[:100]}"}).decode()


def sources_in(text: str) -> list[dict]:
    """The Markdown links of ``text``, once each: the provider returns no result list, only the answer citing it."""
    seen, out = set(), []
    for title, url in _LINK.findall(text):
        if url not in seen and len(out) < MAX_SOURCES:
            seen.add(url)
            out.append({"title": title.strip(), "url": url})
    return out


def add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return more
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        total_tokens=total.total_tokens + more.total_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
    )


@dataclass
class ToolLoop:
    """One answer's rounds: what each round wrote, the searches, the usage of all rounds together."""

    request: ChatRequest
    prompt_tokens: int  # the first round's estimated prompt
    started: float = field(default_factory=time.monotonic)
    rounds: int = 0
    searches: list[Search] = field(default_factory=list)
    usage: Usage | None = None
    completion_used: int = 0  # output tokens (pieces) of the rounds so far: they share one budget
    _text_mark: int = 0
    _reasoning_mark: int = 0

    def begin_round(self, text: str, reasoning: str) -> None:
        """Called before each upstream call with the answer's text so far: what follows is this round's."""
        self.rounds += 1
        self._text_mark, self._reasoning_mark = len(text), len(reasoning)

    def separator(self, text: str) -> str:
        """Before a later round's first piece of content: a paragraph break, so the rounds' texts do not run together.
        It is the app's, not the model's: the round's own text (sent back with its tool calls) starts after it."""
        if self.rounds < 2 or len(text) != self._text_mark or not text or text.endswith("\n\n"):
            return ""
        gap = "\n" if text.endswith("\n") else "\n\n"
        self._text_mark += len(gap)
        return gap

    def round_text(self, text: str) -> str:
        return text[self._text_mark :]

    def round_reasoning(self, reasoning: str) -> str:
        return reasoning[self._reasoning_mark :]

    def cite(self, text: str) -> None:
        """The links this round wrote are the sources of the search it followed."""
        if self.searches and not self.searches[-1].sources:
            self.searches[-1].sources = sources_in(self.round_text(text))

    def follow_up(self, calls: tuple[ToolCall, ...], text: str, reasoning: str) -> list[Search]:
        """The searches these calls start, and ``self.request`` becomes the next round's request. Raises
        ``ToolBoundHit`` when no further round may run; the searches asked for are then kept as ``failed``: the
        provider charges a search for the response that calls it [notes §8]."""
        new = [search_from_call(call) for call in calls if call.name == WEB_SEARCH]
        try:
            left = self._check_bounds(new)
        except ToolBoundHit:
            for search in new:
                search.status = "failed"
            self.searches.extend(new)
            raise
        assistant = {
            "role": "assistant",
            "content": self.round_text(text),
            "reasoning": self.round_reasoning(reasoning),
            "tool_calls": [call.as_dict() for call in calls],
        }
        results = [
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": tool_result(call)} for call in calls
        ]
        self.request = replace(
            self.request,
            messages=[*self.request.messages, assistant, *results],
            max_tokens=left if self.request.max_tokens is not None else None,
        )
        self.searches.extend(new)
        return new

    def _check_bounds(self, new: list[Search]) -> int:
        """The output budget left for the next round, or ToolBoundHit."""
        if self.rounds >= max_rounds():
            raise ToolBoundHit(
                "tool_rounds_exceeded",
                _("The answer needed more than %(n)d rounds of web search and was stopped.") % {"n": max_rounds()},
            )
        if time.monotonic() >= self.deadline():
            raise self.time_bound()
        left = (self.request.max_tokens or 0) - self.completion_used
        if self.request.max_tokens is not None and left < 1:
            raise ToolBoundHit("tool_budget_exceeded", _("The answer used its whole length budget while searching."))
        tokens = sum(s.tokens for s in [*self.searches, *new])
        searches = len(self.searches) + len(new)
        if searches > max_rounds() or tokens > searches * SEARCH_TOKENS_ALLOWANCE:
            raise ToolBoundHit(
                "tool_budget_exceeded",
                _("The searches of this answer would cost more credits than were reserved for it."),
            )
        return left

    def deadline(self) -> float:
        """When the loop may run no longer (event-loop time = time.monotonic)."""
        return self.started + settings.KIMICHAT_TOOL_MAX_SECONDS

    def time_bound(self) -> ToolBoundHit:
        return ToolBoundHit(
            "tool_time_exceeded",
            _("The answer spent longer than %(s)d seconds searching and was stopped.")
            % {"s": int(settings.KIMICHAT_TOOL_MAX_SECONDS)},
        )

    def searched(self) -> list[Search]:
        """The next round answered: the provider has run the searches it was given. Returns those."""
        done = [s for s in self.searches if s.status == "searching"]
        for search in done:
            search.status = "done"
        return done

    def failed(self, status: str = "failed") -> None:
        """The answer ended before the provider answered these searches: ``failed`` or ``stopped``."""
        for search in self.searches:
            if search.status == "searching":
                search.status = status

    def search_count(self) -> int:
        return len(self.searches)

    def fees(self, fee: Decimal) -> Decimal:
        return fee * len(self.searches)

    def as_list(self) -> list[dict]:
        return [s.as_dict() for s in self.searches]
