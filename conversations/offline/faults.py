"""Error faults of the offline server: the canned error answers that ``[[fault:NAME]]`` asks for, in each provider's
shape, and the ``429_then_ok`` counter. Stream faults (drops, silences, garbage) live with the writers in
``replies.py``; framing quirks in ``wire.Framer``.
"""

from __future__ import annotations

import hashlib
import threading
import uuid

import orjson

from conversations.offline import directives, wire
from conversations.offline.wire import ErrorReply, anthropic_error, dumps, openai_error

# fault → (status, Moonshot/OpenAI type, message, Anthropic type)
_STATUS_ERRORS = {
    400: (
        "invalid_request_error",
        "Invalid request: the offline server rejected this request",
        "invalid_request_error",
    ),
    401: ("invalid_authentication_error", "Invalid Authentication", "authentication_error"),
    403: ("permission_denied_error", "The API you are accessing is not open", "permission_error"),
    404: ("resource_not_found_error", "Not found the model or Permission denied", "not_found_error"),
    429: (
        "rate_limit_reached_error",
        "Your account reached max request rate, please try again after 1 seconds",
        "rate_limit_error",
    ),
    500: ("server_error", "Internal server error", "api_error"),
    503: ("server_unavailable", "The service is temporarily unavailable", "overloaded_error"),
}
_NAMED_ERRORS = {
    "quota": (
        429,
        "exceeded_current_quota_error",
        "Your account is suspended due to insufficient balance, please recharge your account",
    ),
    "overloaded": (
        429,
        "engine_overloaded_error",
        "The engine is currently overloaded, please try again later",
    ),
    "context_too_long": (
        400,
        "invalid_request_error",
        "Invalid request: Your request exceeded model token limit: 262144",
    ),
    "content_filter": (400, "content_filter", "The request was rejected because it was considered high risk"),
}
# Ace Data Cloud codes and the statuses it sends them with (seed 000).
ACEDATA_STATUS = {
    "token_mismatched": 400,
    "api_not_implemented": 400,
    "invalid_token": 401,
    "used_up": 403,
    "too_many_requests": 429,
    "api_error": 500,
}


def error_for_fault(name: str, arg: str, *, anthropic: bool) -> ErrorReply | None:
    """The canned error answer of an error fault, in the endpoint's shape; None when ``name`` is not one."""
    if name == "html504":
        return ErrorReply(504, wire.HTML_504, "text/html")
    if name == "acedata":
        code = arg or "api_error"
        body = {"error": {"code": code, "message": f"offline fault {code}"}, "trace_id": str(uuid.uuid4())}
        return ErrorReply(ACEDATA_STATUS.get(code, 400), dumps(body))
    if name in _NAMED_ERRORS:
        status, kind, message = _NAMED_ERRORS[name]
        return (anthropic_error if anthropic else openai_error)(status, kind, message)
    if name == "status":
        try:
            status = int(arg)
        except ValueError:
            return None
        kind, message, anthropic_kind = _STATUS_ERRORS.get(status, ("server_error", f"error {status}", "api_error"))
        headers = {"Retry-After": "1"} if status == 429 else None
        if anthropic:
            return anthropic_error(status, anthropic_kind, message, headers)
        return openai_error(status, kind, message, headers=headers)
    return None


class RetryCounter:
    """``429_then_ok:N``: the first N requests with the same messages get a 429 with ``Retry-After: 0``."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def reply(self, messages: list[dict], found: directives.Directives, *, anthropic: bool) -> ErrorReply | None:
        if not found.has("429_then_ok"):
            return None
        key = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
        with self._lock:
            seen = self._counts.get(key, 0)
            self._counts[key] = seen + 1
        if seen >= int(found.number("429_then_ok", 1)):
            return None
        message = "Your account reached max request rate, please try again after 0 seconds"
        if anthropic:
            return anthropic_error(429, "rate_limit_error", message, headers={"Retry-After": "0"})
        return openai_error(429, "rate_limit_reached_error", message, headers={"Retry-After": "0"})


def error_reply(found: directives.Directives, *, anthropic: bool) -> ErrorReply | None:
    for name, arg in found.faults.items():
        reply = error_for_fault(name, arg, anthropic=anthropic)
        if reply is not None:
            return reply
    return None
