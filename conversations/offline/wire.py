"""Exact bytes of the offline server: SSE framing (with each quirk real providers show) and error body shapes."""

from __future__ import annotations

import json

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
