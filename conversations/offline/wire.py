"""Exact bytes of the offline server: SSE framing (with each quirk real providers show) and provider error bodies."""

from __future__ import annotations

import json
import uuid

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
HTML_504 = (
    b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
GARBAGE = b"\x00\xff\xfeHTTP/1.1 502 garbage <html>\n\ndata: <html><body>Bad gateway \xe9</body></html>\n\n"


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class ErrorReply:
    def __init__(self, status: int, body: bytes, content_type: str = "application/json", headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


def openai_error(status: int, kind: str, message: str, code: str | None = None, headers=None) -> ErrorReply:
    error = {"message": message, "type": kind}
    if code:
        error["code"] = code
    return ErrorReply(status, dumps({"error": error}), headers=headers)


def anthropic_error(status: int, kind: str, message: str, headers=None) -> ErrorReply:
    return ErrorReply(status, dumps({"type": "error", "error": {"type": kind, "message": message}}), headers=headers)


def error_for_fault(name: str, arg: str, *, anthropic: bool) -> ErrorReply | None:
    """The canned error answer of an error fault, in the endpoint's shape; None when ``name`` is not one."""
    if name == "html504":
        return ErrorReply(504, HTML_504, "text/html")
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


class Framer:
    """Encodes SSE events with the quirks asked for: line endings, ``data:`` spacing, split payloads, comments."""

    def __init__(self, faults: dict[str, str]):
        self.eol = "\r\n" if "crlf" in faults else "\r" if "cr" in faults else "\n"
        self.prefix = "data:" if "nospace" in faults else "data: "
        self.multiline = "multiline" in faults
        self.comments = "comments" in faults
        self._count = 0

    def event(self, payload, event: str | None = None) -> bytes:
        """``payload`` is a dict (JSON) or a literal string such as ``[DONE]``."""
        self._count += 1
        lines = []
        if self.comments:
            lines += [": keep-alive", f"id: {self._count}", "retry: 3000"]
            event = event or "message"
        if event:
            lines.append(f"event: {event}")
        if isinstance(payload, str):
            data_lines = [payload]
        elif self.multiline:
            # Pretty-printed JSON breaks lines only between tokens; the client joins data lines with "\n".
            data_lines = json.dumps(payload, ensure_ascii=False, indent=1).split("\n")
        else:
            data_lines = [json.dumps(payload, ensure_ascii=False, separators=(",", ":"))]
        lines += [self.prefix + line for line in data_lines]
        return (self.eol.join(lines) + self.eol + self.eol).encode()

    def comment(self, text: str) -> bytes:
        return f": {text}{self.eol}".encode()
