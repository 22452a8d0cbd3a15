"""The offline server's HTTP/1.1 layer: reading one request, writing one response (whole or chunked, or cut off),
and the log of what was seen.

Plain asyncio streams, not a web framework, because the faults need exact control of the bytes: a connection dropped
in the middle of a chunked body, CR-only line endings, writes that split UTF-8 characters. Connections are kept for
the next request, as the real API keeps them (HTTP/1.1's default), when the response was written whole; a fault
that cuts a response off, and a request that says ``Connection: close``, end the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Time-out"}  # fmt: skip


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None = None
    status: int | None = None
    sent_text: str = ""  # content actually written to the socket
    sent_reasoning: str = ""
    completed: bool = False  # the answer was written to the end
    disconnected: bool = False  # the client went away mid-answer
    connection: int = 0  # which of the server's connections carried it (numbered from 1): reuse shows here
    received_at: float = field(default_factory=time.time)
    received_ns: int = field(default_factory=time.monotonic_ns)  # the same arrival on CLOCK_MONOTONIC (benchmarks)

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.endswith(("/chat/completions", "/messages"))


class RequestLog:
    """What the server saw, for tests ("the offline server saw no request")."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in self.records if r.is_chat]

    @property
    def chat_count(self) -> int:
        return len(self.chat_requests)

    @property
    def last_chat(self) -> RequestRecord | None:
        chats = self.chat_requests
        return chats[-1] if chats else None

    @property
    def last_request_body(self) -> dict | None:
        last = self.last_chat
        return last.body if last else None

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class ClientGone(Exception):
    pass


class Response:
    """Writes one HTTP response: whole, or chunked piece by piece; can also abort the connection."""

    def __init__(self, writer: asyncio.StreamWriter, gone: asyncio.Task, record: RequestRecord):
        self.writer = writer
        self.gone = gone  # finishes when the client closed its side
        self.record = record
        self.split_sizes: itertools.cycle | None = None  # split_utf8: tiny chunk sizes
        self.ended = False  # written to its end (whole, or its last chunk): the connection can take another request

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        self.record.status = status
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def whole(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        head = self._head(status, {**headers, "Content-Type": content_type, "Content-Length": str(len(body))})
        self.writer.write(head + body)
        await self.writer.drain()
        self.ended = True

    async def start_chunked(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        head = {**headers, "Content-Type": content_type, "Cache-Control": "no-cache", "Transfer-Encoding": "chunked"}
        self.writer.write(self._head(status, head))
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        if self.gone.done():
            raise ClientGone
        if self.split_sizes is None:
            parts = [data]
        else:
            parts, offset = [], 0
            while offset < len(data):
                size = next(self.split_sizes)
                parts.append(data[offset : offset + size])
                offset += size
        for part in parts:
            self.writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await self.writer.drain()
            if self.split_sizes is not None:
                await asyncio.sleep(0)  # let each tiny chunk leave on its own
        if self.writer.is_closing():
            raise ClientGone

    async def end_chunked(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        self.ended = True

    def abort(self) -> None:
        """Drop the connection: no terminating chunk, a reset instead of a clean close."""
        self.writer.transport.abort()


async def read_request(
    reader: asyncio.StreamReader, first: bytes = b""
) -> tuple[str, str, dict[str, str], bytes] | None:
    """The next request of the connection; ``first``: its first byte(s), already read (by the watch for the client
    leaving, while the response before it was written). None: the client closed the connection instead."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # connected and left without a request (or without another one)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("chunked request bodies are not supported")
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), path, headers, body
