"""Per-request directives for the offline server: faults, answer length, rate, echo.

Given by the ``X-Offline-Fault`` header (comma-separated fault names) and/or markers in the LAST user message, so
the browser and websocket layers can trigger them without custom headers:

    [[fault:NAME]]  [[fault:NAME:ARG]]  [[tokens:N]]  [[rate:N]]  [[echo]]  [[echo:context]]  [[echo:system]]
    [[search:QUERY]]

``[[search:QUERY]]`` (once per search, in order) makes a request that declares ``$web_search`` answer with that
search's tool call first (``tools.py``).

Fault names are listed in ``FAULTS`` and documented in docs/kimi-client.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MARKER = re.compile(r"\[\[(fault|tokens|rate|echo|search)(?::([^\]]*))?\]\]")

FAULTS = {
    # error statuses and bodies
    "status",  # status:N (400, 401, 403, 404, 429, 500, 503, ...)
    "quota",  # 429 exceeded_current_quota_error
    "overloaded",  # 429 engine_overloaded_error
    "context_too_long",  # 400 "exceeded model token limit"
    "content_filter",  # 400 content_filter
    "html504",  # 504 HTML gateway page
    "acedata",  # acedata:<code>: Ace Data Cloud body shape
    "429_then_ok",  # 429_then_ok:N: first N requests with this prompt get 429 (Retry-After: 0), then success
    # stream failures
    "error_midstream",
    "drop_midstream",
    "no_done",
    "slow_first_token",  # slow_first_token:SECONDS
    "silence",  # silence:SECONDS, a pause mid-stream sending nothing
    "garbage",
    "endless",
    # framing quirks
    "crlf",
    "cr",
    "nospace",
    "multiline",
    "comments",
    "split_utf8",
    "empty_choices",
    "json_for_stream",  # a gateway that ignores stream=true and answers one JSON body
    # web search (tools.py)
    "search_error",  # the request carrying search results fails: 500 server_error
    "search_timeout",  # search_timeout:SECONDS: the request carrying search results waits that long first
}


@dataclass
class Directives:
    faults: dict[str, str] = field(default_factory=dict)  # name → argument ("" when none)
    tokens: int | None = None
    rate: float | None = None
    echo: bool = False
    searches: list[str] = field(default_factory=list)  # [[search:QUERY]], in order
    echo_context: bool = False  # [[echo:context]]: also report what reached the prompt (offline/files.py)
    echo_system: bool = False  # [[echo:system]]: also repeat the system messages whole (custom instructions)

    def has(self, name: str) -> bool:
        return name in self.faults

    def number(self, name: str, default: float) -> float:
        try:
            return float(self.faults.get(name) or default)
        except ValueError:
            return default


def _add_fault(directives: Directives, spec: str) -> None:
    name, _, arg = spec.strip().partition(":")
    if name:
        directives.faults[name] = arg.strip()


def parse(header: str | None, last_user_text: str) -> Directives:
    directives = Directives()
    for spec in (header or "").split(","):
        _add_fault(directives, spec)
    for kind, arg in _MARKER.findall(last_user_text):
        if kind == "fault":
            _add_fault(directives, arg)
        elif kind == "tokens" and arg.strip().isdigit():
            directives.tokens = int(arg)
        elif kind == "rate":
            try:
                directives.rate = max(0.0, float(arg))
            except ValueError:
                pass
        elif kind == "echo":
            directives.echo = True
            directives.echo_context = arg.strip() == "context"
            directives.echo_system = arg.strip() == "system"
        elif kind == "search" and arg.strip():
            directives.searches.append(arg.strip())
    return directives


def strip_markers(text: str) -> str:
    """The user's text without directive markers and the whitespace they leave at either end."""
    return _MARKER.sub("", text).strip()
