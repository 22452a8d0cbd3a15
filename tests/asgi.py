"""An HTTP request through an ASGI application in process, as daphne makes it (tests and bench/handler.py)."""

from __future__ import annotations

import asyncio


def http_scope(path: str, headers: dict[str, str] | None = None, *, query_string: bytes = b"", https=False) -> dict:
    """The scope of a GET of ``path`` on localhost (``headers`` lower-case)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https" if https else "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": [(k.encode(), v.encode()) for k, v in {"host": "localhost", **(headers or {})}.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 443 if https else 80),
    }


async def call(app, scope: dict, on_body=None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; ``on_body(part)`` instead sees each part as it comes (the body
    returned is then empty). The client stays connected until the application has answered."""
    sent: list[dict] = []
    parts: list[bytes] = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: Django cancels this once it has answered

    async def send(message):
        if message["type"] == "http.response.body":
            (on_body or parts.append)(message.get("body", b""))
        else:
            sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, b"".join(parts)
