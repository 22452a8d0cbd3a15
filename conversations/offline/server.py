"""The built-in offline Kimi-compatible server: a real HTTP/1.1 server on loopback, written on asyncio streams.

Plain asyncio (not a web framework) because the faults need exact control of the bytes: a connection dropped in the
middle of a chunked body, CR-only line endings, writes that split UTF-8 characters. One request per connection
(``Connection: close``); SSE answers use chunked transfer encoding.

Endpoints (under ``/v1``): GET /models, POST /chat/completions (SSE or JSON), GET /users/me/balance,
POST /messages (Anthropic format), POST /tokenizers/estimate-token-count. Directives: see ``directives.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.offline import answers, directives, wire

logger = logging.getLogger("conversations.offline")

DEFAULT_API_KEY = "offline-kimi-key"
DEFAULT_MODELS = [
    "kimi-k3",
    "kimi-k2.7-code",
    "kimi-k2.6",
    "kimi-k2.5",
    "kimi-k2-thinking-turbo",
    "kimi-k2-thinking",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
    "kimi-k2",
    "kimi-k2-0905",
]
RATE_LIMIT = 60
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


class _ClientGone(Exception):
    pass


class _Response:
    """Writes one HTTP response: whole, or chunked piece by piece; can also abort the connection."""

    def __init__(self, writer: asyncio.StreamWriter, gone: asyncio.Task, record: RequestRecord):
        self.writer = writer
        self.gone = gone  # finishes when the client closed its side
        self.record = record
        self.split_sizes: itertools.cycle | None = None  # split_utf8: tiny chunk sizes

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        self.record.status = status
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def whole(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        head = self._head(status, {**headers, "Content-Type": content_type, "Content-Length": str(len(body))})
        self.writer.write(head + body)
        await self.writer.drain()

    async def start_chunked(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        head = {**headers, "Content-Type": content_type, "Cache-Control": "no-cache", "Transfer-Encoding": "chunked"}
        self.writer.write(self._head(status, head))
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        if self.gone.done():
            raise _ClientGone
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
            raise _ClientGone

    async def end_chunked(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection: no terminating chunk, a reset instead of a clean close."""
        self.writer.transport.abort()


@dataclass
class _Chat:
    """Everything decided about one chat request before answering it."""

    body: dict
    model: str
    messages: list[dict]
    directives: directives.Directives
    answer: answers.Answer
    stream: bool
    include_usage: bool
    max_tokens: int | None
    rate: float
    anthropic: bool
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class OfflineKimiServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = DEFAULT_API_KEY,
        tokens_per_second: float = 30.0,
        models: list[str] | None = None,
        stamp_piece: Callable[[str, float], str] | None = None,
    ):
        self.host = host
        self.port = port
        self.api_key = api_key
        self.tokens_per_second = tokens_per_second
        self.models = list(models or DEFAULT_MODELS)
        # Benchmark hook (a later issue): given a content piece and its send time, returns the piece to send.
        self.stamp_piece = stamp_piece
        self.log = RequestLog()
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._retry_counters: dict[str, int] = {}
        self._served = 0
        self._credits = 1000

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("offline Kimi-compatible server on %s", self.base_url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    def run_in_thread(self) -> OfflineKimiHandle:
        return OfflineKimiHandle(self)

    # --- connection ---------------------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        gone: asyncio.Task | None = None
        record: RequestRecord | None = None
        try:
            parsed = await asyncio.wait_for(_read_request(reader), timeout=30)
            if parsed is None:
                return
            method, path, headers, raw_body = parsed
            record = RequestRecord(method=method, path=path, headers=headers)
            if raw_body:
                with contextlib.suppress(orjson.JSONDecodeError):
                    body = orjson.loads(raw_body)
                    record.body = body if isinstance(body, dict) else None
            self.log.add(record)
            gone = asyncio.create_task(reader.read(1))  # "" when the client closes its side
            response = _Response(writer, gone, record)
            await self._route(record, raw_body, response)
        except (_ClientGone, ConnectionError):
            if record is not None:
                record.disconnected = True
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping
        except Exception:
            logger.exception("offline server failed on a request")
        finally:
            if gone is not None:
                gone.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            self._handlers.discard(task)

    async def _route(self, record: RequestRecord, raw_body: bytes, response: _Response) -> None:
        path = record.path.split("?", 1)[0].rstrip("/")
        routes = {
            ("GET", "/v1/models"): self._models,
            ("GET", "/v1/users/me/balance"): self._balance,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/messages"): self._chat,
            ("POST", "/v1/tokenizers/estimate-token-count"): self._estimate,
        }
        handler = routes.get((record.method, path))
        anthropic = path.endswith("/messages")
        if handler is None:
            await self._error(response, wire.openai_error(404, "resource_not_found_error", f"No route {path}"))
            return
        if not self._authorized(record.headers, anthropic):
            reply = (
                wire.anthropic_error(401, "authentication_error", "Invalid API key")
                if anthropic
                else wire.openai_error(401, "invalid_authentication_error", "Invalid Authentication")
            )
            await self._error(response, reply)
            return
        if record.method == "POST" and record.body is None:
            await self._error(response, wire.openai_error(400, "invalid_request_error", "Request body is not JSON"))
            return
        await handler(record, response, anthropic)

    def _authorized(self, headers: dict[str, str], anthropic: bool) -> bool:
        bearer = headers.get("authorization", "")
        key = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        if anthropic and not key:
            key = headers.get("x-api-key", "")
        return bool(key) and key == self.api_key

    def _headers(self, request_id: str) -> dict[str, str]:
        remaining = max(0, RATE_LIMIT - 1 - self._served % RATE_LIMIT)
        return {
            "Msh-Request-Id": request_id,
            "x-request-id": request_id,
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 60),
            "X-Credits-Remaining": str(self._credits),
        }

    async def _error(self, response: _Response, reply: wire.ErrorReply, request_id: str = "") -> None:
        headers = {**reply.headers, "x-request-id": request_id or uuid.uuid4().hex}
        await response.whole(reply.status, reply.body, reply.content_type, headers)
        response.record.completed = True

    # --- simple endpoints ----------------------------------------------------------------------------------------

    async def _models(self, record, response, anthropic) -> None:
        data = [{"id": m, "object": "model", "created": 1735785600, "owned_by": "moonshot-ai"} for m in self.models]
        await response.whole(200, wire.dumps({"object": "list", "data": data}), "application/json", {})

    async def _balance(self, record, response, anthropic) -> None:
        body = {
            "code": 0,
            "data": {"available_balance": 49.58, "voucher_balance": 46.58, "cash_balance": 3.0},
            "scode": "0x0",
            "status": True,
        }
        await response.whole(200, wire.dumps(body), "application/json", {})

    async def _estimate(self, record, response, anthropic) -> None:
        messages = record.body.get("messages") if isinstance(record.body.get("messages"), list) else []
        total = estimate_messages_locally([m for m in messages if isinstance(m, dict)])
        await response.whole(200, wire.dumps({"data": {"total_tokens": total}}), "application/json", {})

    # --- chat ----------------------------------------------------------------------------------------------------

    async def _chat(self, record: RequestRecord, response: _Response, anthropic: bool) -> None:
        body = record.body
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        last_text = _text_of(last_user.get("content"))
        found = directives.parse(record.headers.get("x-offline-fault"), last_text)
        model = str(body.get("model") or "")

        rejection = self._validate(body, model, messages, anthropic)
        if rejection is not None:
            await self._error(response, rejection)
            return
        for name, arg in found.faults.items():
            reply = wire.error_for_fault(name, arg, anthropic=anthropic)
            if reply is not None:
                await self._error(response, reply)
                return
        if found.has("429_then_ok"):
            key = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
            seen = self._retry_counters.get(key, 0)
            self._retry_counters[key] = seen + 1
            if seen < int(found.number("429_then_ok", 1)):
                message = "Your account reached max request rate, please try again after 0 seconds"
                reply = wire.openai_error(429, "rate_limit_reached_error", message, headers={"Retry-After": "0"})
                if anthropic:
                    reply = wire.anthropic_error(429, "rate_limit_error", message, headers={"Retry-After": "0"})
                await self._error(response, reply)
                return

        thinks = _thinks(model, body)
        echo = directives.strip_markers(last_text) if found.echo else None
        answer = answers.build_answer(messages, thinks=thinks, tokens=found.tokens, echo=echo)
        stream_options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        chat = _Chat(
            body=body,
            model=model,
            messages=messages,
            directives=found,
            answer=answer,
            stream=bool(body.get("stream")),
            include_usage=bool(stream_options.get("include_usage")),
            max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
            rate=self.tokens_per_second if found.rate is None else found.rate,
            anthropic=anthropic,
        )
        self._served += 1
        if chat.stream:
            await (self._stream_anthropic(chat, response) if anthropic else self._stream_openai(chat, response))
        else:
            await self._complete(chat, response)

    def _validate(self, body: dict, model: str, messages: list[dict], anthropic: bool) -> wire.ErrorReply | None:
        """The checks the real providers make, so a client bug shows up offline as it would online."""
        bad = wire.anthropic_error if anthropic else wire.openai_error
        if not model:
            return bad(400, "invalid_request_error", "model is required")
        if model not in self.models:
            return (
                wire.anthropic_error(404, "not_found_error", f"Not found the model {model} or Permission denied")
                if anthropic
                else wire.openai_error(
                    404, "resource_not_found_error", f"Not found the model {model} or Permission denied"
                )
            )
        if not messages:
            return bad(400, "invalid_request_error", "messages must not be empty")
        if anthropic and not isinstance(body.get("max_tokens"), int):
            return bad(400, "invalid_request_error", "max_tokens is required")
        temperature = body.get("temperature")
        if temperature is not None:
            if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1:
                return bad(400, "invalid_request_error", "Invalid request: temperature must be in [0, 1]")
            if model.startswith(("kimi-k2.5", "kimi-k2.6")):
                fixed = 1.0 if _thinks(model, body) else 0.6
                if abs(temperature - fixed) > 1e-9:
                    return bad(400, "invalid_request_error", f"invalid temperature: only {fixed} is allowed")
            n = body.get("n") or 1
            if isinstance(n, int) and n > 1 and temperature < 0.01:
                return bad(400, "invalid_request_error", "Invalid request: n > 1 requires temperature > 0")
        return None

    def _usage(self, chat: _Chat, content_pieces: int, reasoning_pieces: int) -> dict:
        prompt = estimate_messages_locally(chat.messages)
        if chat.anthropic and isinstance(chat.body.get("system"), str):
            prompt += estimate_tokens_locally(chat.body["system"])
        completion = content_pieces + reasoning_pieces
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _plan(self, chat: _Chat) -> tuple[list[str], list[str], str]:
        """(reasoning pieces, content pieces, finish reason) after max_tokens."""
        reasoning, content = list(chat.answer.reasoning), list(chat.answer.content)
        if chat.max_tokens is not None and len(reasoning) + len(content) > chat.max_tokens:
            reasoning = reasoning[: chat.max_tokens]
            content = content[: max(0, chat.max_tokens - len(reasoning))]
            return reasoning, content, "length"
        return reasoning, content, "stop"

    async def _complete(self, chat: _Chat, response: _Response) -> None:
        found = chat.directives
        if found.has("slow_first_token"):
            await asyncio.sleep(found.number("slow_first_token", 1.0))
        reasoning, content, finish = self._plan(chat)
        text, thought = "".join(content), "".join(reasoning)
        usage = self._usage(chat, len(content), len(reasoning))
        headers = self._headers(chat.request_id)
        if found.has("garbage"):
            await response.whole(200, wire.HTML_504, "text/html", headers)
            return
        if chat.anthropic:
            blocks = ([{"type": "thinking", "thinking": thought}] if thought else []) + [{"type": "text", "text": text}]
            payload = {
                "id": "msg_" + chat.request_id,
                "type": "message",
                "role": "assistant",
                "model": chat.model,
                "content": blocks,
                "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
                "stop_sequence": None,
                "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
            }
        else:
            message = {"role": "assistant", "content": text}
            if thought:
                message["reasoning_content"] = thought
            payload = {
                "id": "chatcmpl-" + chat.request_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        body = wire.dumps(payload)
        if found.has("drop_midstream"):
            head = response._head(
                200, {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}
            )
            response.writer.write(head + body[: len(body) // 2])
            await response.writer.drain()
            response.abort()
            return
        # Recorded before writing: a test may read the log as soon as its client has the answer.
        response.record.sent_text, response.record.sent_reasoning = text, thought
        response.record.completed = True
        self._credits -= 1
        await response.whole(200, body, "application/json", headers)

    async def _pace(self, started: float, count: int, rate: float) -> None:
        # Always yield to the loop, even at rate 0, so one fast (or endless) answer cannot starve other connections.
        delay = started + count / rate - time.monotonic() if rate > 0 else 0
        await asyncio.sleep(max(0.0, delay))

    async def _stream_openai(self, chat: _Chat, response: _Response) -> None:
        found = chat.directives
        framer = wire.Framer(found.faults)
        reasoning, content, finish = self._plan(chat)
        base = {"id": "chatcmpl-" + chat.request_id, "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = chat.model

        def chunk(delta: dict | None = None, **choice) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": None, **choice}]}

        async def send(payload) -> None:
            await response.chunk(framer.event(payload))

        if found.has("split_utf8"):
            response.split_sizes = itertools.cycle([1, 2, 1, 3])
        await response.start_chunked(200, "text/event-stream; charset=utf-8", self._headers(chat.request_id))
        if found.has("slow_first_token"):
            await asyncio.sleep(found.number("slow_first_token", 1.0))
        if found.has("garbage"):
            await response.chunk(wire.GARBAGE)
            await response.end_chunked()
            return
        await send(chunk({"role": "assistant", "content": ""}))
        if found.has("empty_choices"):
            await send({**base, "choices": []})
        started, sent = time.monotonic(), 0
        record = response.record
        if reasoning:
            await send(chunk({"reasoning_content": ""}))  # thinking models open with an empty piece
        for piece in reasoning:
            await send(chunk({"reasoning_content": piece}))
            record.sent_reasoning += piece
            sent += 1
            await self._pace(started, sent, chat.rate)
        fail_at = max(1, min(5, len(content) // 2))
        pieces = itertools.cycle(content or ["…"]) if found.has("endless") else iter(content)
        for index, piece in enumerate(pieces):
            if index == fail_at:
                if found.has("error_midstream"):
                    error = {"message": "The engine failed while generating", "type": "server_error"}
                    await send({"error": error})
                    await response.end_chunked()
                    return
                if found.has("drop_midstream"):
                    response.abort()
                    return
                if found.has("silence"):
                    await asyncio.sleep(found.number("silence", 1.0))
            piece = self._stamped(piece)
            await send(chunk({"content": piece}))
            record.sent_text += piece
            sent += 1
            if found.has("empty_choices") and index % 3 == 2:
                await send({**base, "choices": []})
            await self._pace(started, sent, chat.rate)
        usage = self._usage(chat, len(content), len(reasoning))
        await send(chunk({}, finish_reason=finish, usage=usage))
        if chat.include_usage:
            await send({**base, "choices": [], "usage": usage})
        record.completed = True  # before the last bytes: the client may check the log as soon as it has them
        self._credits -= 1
        if not found.has("no_done"):
            await send("[DONE]")
        await response.end_chunked()

    async def _stream_anthropic(self, chat: _Chat, response: _Response) -> None:
        found = chat.directives
        framer = wire.Framer(found.faults)
        reasoning, content, finish = self._plan(chat)
        usage = self._usage(chat, len(content), len(reasoning))
        record = response.record

        async def send(kind: str, payload: dict) -> None:
            await response.chunk(framer.event({"type": kind, **payload}, event=kind))

        if found.has("split_utf8"):
            response.split_sizes = itertools.cycle([1, 2, 1, 3])
        await response.start_chunked(200, "text/event-stream; charset=utf-8", self._headers(chat.request_id))
        if found.has("slow_first_token"):
            await asyncio.sleep(found.number("slow_first_token", 1.0))
        if found.has("garbage"):
            await response.chunk(wire.GARBAGE)
            await response.end_chunked()
            return
        message = {"id": "msg_" + chat.request_id, "type": "message", "role": "assistant", "model": chat.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": 1}}  # fmt: skip
        await send("message_start", {"message": message})
        await send("ping", {})
        started, sent, block = time.monotonic(), 0, 0
        if reasoning:
            await send("content_block_start", {"index": block, "content_block": {"type": "thinking", "thinking": ""}})
            for piece in reasoning:
                await send(
                    "content_block_delta", {"index": block, "delta": {"type": "thinking_delta", "thinking": piece}}
                )
                record.sent_reasoning += piece
                sent += 1
                await self._pace(started, sent, chat.rate)
            await send("content_block_stop", {"index": block})
            block += 1
        await send("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}})
        fail_at = max(1, min(5, len(content) // 2))
        pieces = itertools.cycle(content or ["…"]) if found.has("endless") else iter(content)
        for index, piece in enumerate(pieces):
            if index == fail_at:
                if found.has("error_midstream"):
                    await send("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                    await response.end_chunked()
                    return
                if found.has("drop_midstream"):
                    response.abort()
                    return
                if found.has("silence"):
                    await asyncio.sleep(found.number("silence", 1.0))
            piece = self._stamped(piece)
            await send("content_block_delta", {"index": block, "delta": {"type": "text_delta", "text": piece}})
            record.sent_text += piece
            sent += 1
            await self._pace(started, sent, chat.rate)
        await send("content_block_stop", {"index": block})
        stop_reason = "end_turn" if finish == "stop" else "max_tokens"
        await send(
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
             "usage": {"output_tokens": usage["completion_tokens"]}},
        )  # fmt: skip
        record.completed = True  # before the last bytes, as above
        self._credits -= 1
        if not found.has("no_done"):
            await send("message_stop", {})
        await response.end_chunked()

    def _stamped(self, piece: str) -> str:
        return self.stamp_piece(piece, time.time()) if self.stamp_piece else piece


def _thinks(model: str, body: dict) -> bool:
    if "-thinking" in model or model.startswith("kimi-k3"):
        return True
    if model.startswith(("kimi-k2.5", "kimi-k2.6", "kimi-k2.7")):
        thinking = body.get("thinking")
        return not (isinstance(thinking, dict) and thinking.get("type") == "disabled")
    return False


def _text_of(content) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # connected and left without a request
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


class OfflineKimiHandle:
    """A server running on its own thread and event loop (tests, the dev server)."""

    def __init__(self, server: OfflineKimiServer):
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="offline-kimi", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("the offline Kimi server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_key(self) -> str:
        return self.server.api_key

    @property
    def log(self) -> RequestLog:
        return self.server.log

    @property
    def chat_count(self) -> int:
        return self.server.log.chat_count

    @property
    def last_request_body(self) -> dict | None:
        return self.server.log.last_request_body

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
