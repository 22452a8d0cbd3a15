"""Tools on the wire: checking the ``tools`` and ``tool_choice`` of a request, and joining streamed tool-call
fragments into whole calls. Free of Django, like the rest of the client.

Rules (/work/shared/kimi-api-notes.md §7, §8):

- a function tool is ``{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}``; its
  name matches ``^[a-zA-Z_][a-zA-Z0-9-_]{0,255}$`` ("$" is reserved for built-ins) and appears once [doc: spec,
  kc-err];
- the one built-in is ``{"type": "builtin_function", "function": {"name": "$web_search"}}``, with no description or
  parameters [doc: websearch];
- ``tool_choice``: ``auto`` and ``none`` everywhere; ``required`` only on kimi-k3 (k2.6/k2.7 refuse it, the rest is
  undocumented [?]); a named function never on a thinking answer (k3 always thinks) [doc: params, tool-choice].
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conversations.kimi.errors import InvalidParameter
from conversations.kimi.events import ToolCall

WEB_SEARCH = "$web_search"
WEB_SEARCH_TOOL = {"type": "builtin_function", "function": {"name": WEB_SEARCH}}
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_]{0,255}$")
BUILTINS = frozenset({WEB_SEARCH})
MAX_TOOLS = 128  # [?] undocumented; a bound so a request cannot grow without limit


def tool_names(tools: list[dict]) -> list[str]:
    return [str((t.get("function") or {}).get("name")) for t in tools]


def check_tools(tools: object) -> list[dict]:
    """The tools as sent, or InvalidParameter naming the first problem."""
    if not isinstance(tools, list) or not tools:
        raise InvalidParameter("'tools' must be a non-empty list.")
    if len(tools) > MAX_TOOLS:
        raise InvalidParameter(f"At most {MAX_TOOLS} tools can be declared.")
    seen: set[str] = set()
    for position, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            raise InvalidParameter(f"Tool {position} must be an object with a 'function' object.")
        name = function.get("name")
        kind = tool.get("type")
        if kind == "builtin_function":
            if name not in BUILTINS:
                raise InvalidParameter(f"Tool {position}: unknown built-in function {str(name)[:60]!r}.")
            if set(function) != {"name"}:
                raise InvalidParameter(f"Tool {position}: {name} takes no description or parameters.")
        elif kind == "function":
            if not isinstance(name, str) or not NAME.match(name):
                raise InvalidParameter(
                    f"Tool {position}: the function name {str(name)[:60]!r} must start with a letter or '_' and "
                    "hold only letters, digits, '-' and '_' (at most 256 characters)."
                )
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise InvalidParameter(f"Tool {position}: 'parameters' must be a JSON Schema object.")
        else:
            raise InvalidParameter(f"Tool {position}: 'type' must be 'function' or 'builtin_function'.")
        if name in seen:
            raise InvalidParameter(f"The tool name {name!r} is declared twice.")
        seen.add(name)
    return tools


def check_tool_choice(choice: object, tools: list[dict] | None, *, family: str, thinks: bool) -> object:
    """The tool_choice to send (None: leave it out), or InvalidParameter."""
    if choice is None:
        return None
    if not tools:
        raise InvalidParameter("'tool_choice' needs 'tools'.")
    if choice in ("auto", "none"):
        return choice
    if choice == "required":
        if family != "kimi-k3":
            raise InvalidParameter("tool_choice 'required' is only available on kimi-k3.")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if name not in tool_names(tools):
            raise InvalidParameter(f"tool_choice names {str(name)[:60]!r}, which is not among the tools.")
        if thinks:
            raise InvalidParameter("A named tool_choice is not available while the model thinks.")
        return choice
    raise InvalidParameter("tool_choice must be 'auto', 'none', 'required' or a named function.")


@dataclass
class _Partial:
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallCollector:
    """Joins tool-call fragments by index (they may interleave); ``calls()`` gives them in index order."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partial] = {}

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, index: int, *, id: str = "", type: str = "", name: str = "", arguments: str = "") -> None:
        part = self._parts.setdefault(index, _Partial())
        part.id = part.id or id
        part.type = part.type or type
        part.name = part.name or name
        if arguments:
            part.arguments.append(arguments)

    def calls(self) -> tuple[ToolCall, ...]:
        out = []
        for index in sorted(self._parts):
            part = self._parts[index]
            kind = part.type or ("builtin_function" if part.name in BUILTINS else "function")
            out.append(ToolCall(part.id, kind, part.name, "".join(part.arguments)))
        return tuple(out)
