"""The built-in offline Kimi-compatible server: a real HTTP/1.1 server on loopback, as strict as the provider it plays.

A ``profile`` (``profiles.py``) picks the provider: Moonshot (default), Moonshot China, Ace Data Cloud or
kimi-k2.ai, each with its endpoints, models, field names, defaults and headers. A chat request is checked like the
real API checks it (``validation.py``), planned (``planning.py``: output budget, prompt cache, partial mode), and
written (``replies.py``); ``[[fault:...]]`` directives (``directives.py``, ``faults.py``) inject failures.

Modules: transport (HTTP bytes, request log), catalogue (models), profiles, validation, planning, faults, replies,
wire (SSE framing, error shapes), answers (the text). This one routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable

import orjson

from conversations.kimi.tokens import estimate_messages_locally
from conversations.offline import directives, faults, files, replies, tools, wire
from conversations.offline.catalogue import spec_for
from conversations.offline.planning import PromptCache, answers_text, plan
from conversations.offline.profiles import PROFILES, Profile, profile_named
from conversations.offline.transport import (
    MAX_HEAD,
    ClientGone,
    RequestLog,
    RequestRecord,
    Response,
    read_request,
)
from conversations.offline.validation import validate

__all__ = ["DEFAULT_API_KEY", "OfflineKimiHandle", "OfflineKimiServer", "PROFILES", "RequestLog", "RequestRecord"]

logger = logging.getLogger("conversations.offline")

DEFAULT_API_KEY = "offline-kimi-key"
DEFAULT_MODELS = list(PROFILES["moonshot"].models)
RATE_LIMIT = 60
# A kept connection waits this long for its next request (the Kimi client's pool lets its own go after 5 s).
IDLE_SECONDS = 30
# Moonshot's answer to an address it does not serve [seen; exact wording ?]: no model named, so clients can tell it
# from an unknown model.
_NO_ROUTE = {
    "moonshot": ("resource_not_found_error", "url.not_found: the requested URL was not found"),
    "gateway": ("invalid_request_error", "Not Found - Invalid endpoint"),  # S003: 404 = invalid endpoint
}


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
        profile: str | Profile = "moonshot",
        max_file_bytes: int = files.MAX_FILE_BYTES,
        max_files: int = files.MAX_FILES,
    ):
        self.host = host
        self.port = port
        self.api_key = api_key
        self.tokens_per_second = tokens_per_second
        self.profile = profile if isinstance(profile, Profile) else profile_named(profile)
        if models is not None:
            self.profile = Profile(**{**self.profile.__dict__, "models": tuple(models)})
        # Benchmark hook (a later issue): given a content piece and its send time, returns the piece to send.
        self.stamp_piece = stamp_piece
        self.log = RequestLog()
        self.prompt_cache = PromptCache()
        self.files = files.FileStore(max_file_bytes=max_file_bytes, max_files=max_files)
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._connections = itertools.count(1)
        self._retries = faults.RetryCounter()
        self.tool_memory = tools.ToolMemory()
        self._served = 0
        self._credits = 1000
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        return list(self.profile.models)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.profile.base_path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("offline Kimi-compatible server (%s) on %s", self.profile.name, self.base_url)

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
        first = b""  # the next request's first byte, when the watch for the client leaving read it
        number = next(self._connections)
        try:
            # One request after another, as long as each response was written to its end (transport.py).
            while True:
                parsed = await asyncio.wait_for(read_request(reader, first), timeout=IDLE_SECONDS)
                if parsed is None:
                    return
                method, path, headers, raw_body = parsed
                record = RequestRecord(method=method, path=path, headers=headers, connection=number)
                if raw_body:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        body = orjson.loads(raw_body)
                        record.body = body if isinstance(body, dict) else None
                self.log.add(record)
                gone = asyncio.create_task(reader.read(1))  # "" when the client closes its side
                response = Response(writer, gone, record)
                await self._route(record, response, raw_body)
                if not response.ended or headers.get("connection", "").lower() == "close":
                    return
                record = None  # answered whole: a reset while the connection waits for another request is not its
                gone.cancel()
                first = (await asyncio.gather(gone, return_exceptions=True))[0]
                gone = None
                if isinstance(first, BaseException):
                    first = b""  # cancelled while waiting: nothing was read
                elif not first:
                    return  # the client closed the connection
        except (ClientGone, ConnectionError):
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

    # --- routes --------------------------------------------------------------------------------------------------

    def _routes(self) -> dict[tuple[str, str], tuple[str, Callable]]:
        base = self.profile.base_path
        table = {
            ("GET", base + "/models"): ("models", self._models),
            ("GET", base + "/users/me/balance"): ("balance", self._balance),
            ("POST", base + "/chat/completions"): ("chat", self._chat),
            ("POST", base + "/messages"): ("messages", self._chat),
            ("POST", base + "/tokenizers/estimate-token-count"): ("tokenizer", self._estimate),
            ("GET", "/api/user/credits"): ("credits", self._user_credits),  # kimi-k2.ai [doc: S003]
            ("POST", "/anthropic/v1/messages"): ("messages", self._chat),  # Moonshot's Anthropic endpoint
        }
        return {key: value for key, value in table.items() if value[0] in self.profile.endpoints}

    async def _route(self, record: RequestRecord, response: Response, raw_body: bytes = b"") -> None:
        path = record.path.split("?", 1)[0].rstrip("/")
        found = self._routes().get((record.method, path))
        files_path = self.profile.base_path + "/files"
        if found is None and "files" in self.profile.endpoints and (path + "/").startswith(files_path + "/"):
            found = ("files", lambda rec, resp, _a: self._files(rec, resp, path[len(files_path) :], raw_body))
        anthropic = path.endswith("/messages")
        if found is None:
            kind, message = _NO_ROUTE["gateway" if self.profile.gateway else "moonshot"]
            await self._error(response, wire.openai_error(404, kind, message))
            return
        if not self._authorized(record.headers, anthropic):
            reply = (
                wire.anthropic_error(401, "authentication_error", "Invalid API key")
                if anthropic
                else wire.openai_error(401, "invalid_authentication_error", "Invalid Authentication")
            )
            await self._error(response, reply)
            return
        if record.method == "POST" and record.body is None and found[0] != "files":
            await self._error(response, wire.openai_error(400, "invalid_request_error", "Request body is not JSON"))
            return
        await found[1](record, response, anthropic)

    def _authorized(self, headers: dict[str, str], anthropic: bool) -> bool:
        bearer = headers.get("authorization", "")
        key = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        if anthropic and not key:
            key = headers.get("x-api-key", "")
        return bool(key) and key == self.api_key

    def _headers(self, request_id: str) -> dict[str, str]:
        return self.profile.headers(request_id, self._served, self._credits, RATE_LIMIT)

    async def _error(self, response: Response, reply: wire.ErrorReply, request_id: str = "") -> None:
        headers = {**reply.headers, "x-request-id": request_id or uuid.uuid4().hex}
        await response.whole(reply.status, reply.body, reply.content_type, headers)
        response.record.completed = True

    # --- simple endpoints ----------------------------------------------------------------------------------------

    async def _models(self, record, response, anthropic) -> None:
        data = []
        for model in self.profile.models:
            entry = {"id": model, "object": "model", "owned_by": "moonshot-ai"}
            if self.profile.models_listing == "spec":
                spec = spec_for(model)
                entry.update(
                    created=1735785600,
                    context_length=self.profile.window(model),
                    supports_image_in=spec.image_in,
                    supports_video_in=spec.video_in,
                    supports_reasoning=spec.thinking != "none",
                )
            data.append(entry)
        await response.whole(200, wire.dumps({"object": "list", "data": data}), "application/json", {})

    async def _balance(self, record, response, anthropic) -> None:
        body = {
            "code": 0,
            "data": {"available_balance": 49.58, "voucher_balance": 46.58, "cash_balance": 3.0},
            "scode": "0x0",
            "status": True,
        }
        await response.whole(200, wire.dumps(body), "application/json", {})

    async def _user_credits(self, record, response, anthropic) -> None:
        body = {"credits": self._credits}  # shape undocumented [?]
        await response.whole(200, wire.dumps(body), "application/json", {})

    async def _estimate(self, record, response, anthropic) -> None:
        messages = record.body.get("messages") if isinstance(record.body.get("messages"), list) else []
        total = estimate_messages_locally([m for m in messages if isinstance(m, dict)])
        await response.whole(200, wire.dumps({"data": {"total_tokens": total}}), "application/json", {})

    async def _files(self, record, response, rest: str, raw_body: bytes) -> None:
        if record.method == "POST" and rest == "":
            reply = self.files.upload(record.headers.get("content-type", ""), raw_body)
            if isinstance(reply, wire.ErrorReply):
                await self._error(response, reply)
                return
            await response.whole(reply[0], reply[1], "application/json", {})
            return
        reply = self.files.route(record.method, rest)
        if isinstance(reply, wire.ErrorReply):
            await self._error(response, reply)
            return
        status, body, content_type = reply
        await response.whole(status, body, content_type, {})

    # --- chat ----------------------------------------------------------------------------------------------------

    async def _chat(self, record: RequestRecord, response: Response, anthropic: bool) -> None:
        body = record.body
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        last_text = answers_text(last_user.get("content"))
        found = directives.parse(record.headers.get("x-offline-fault"), last_text)

        rejection = validate(body, self.profile, anthropic)
        turn = None
        if rejection is None and not anthropic:
            rejection = tools.check_tools(body)
            if rejection is None:
                turn = tools.turn(body, messages, found, self.tool_memory)
                if isinstance(turn, wire.ErrorReply):
                    rejection, turn = turn, None
        if rejection is None and turn is not None and turn.answered:
            if found.has("search_error"):
                rejection = wire.openai_error(500, "server_error", "web search failed, please try again later")  # [?]
            elif found.has("search_timeout"):
                await asyncio.sleep(found.number("search_timeout", 1.0))
        if rejection is None:
            rejection = faults.error_reply(found, anthropic=anthropic)
        if rejection is None:
            rejection = self._retries.reply(messages, found, anthropic=anthropic)
        if rejection is not None:
            await self._error(response, rejection)
            return

        stream_options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        chat = replies.Chat(
            body=body,
            model=str(body["model"]),
            plan=plan(
                body, messages, self.profile, found, self.prompt_cache, anthropic=anthropic, last_user_text=last_text
            ),
            directives=found,
            profile=self.profile,
            stream=bool(body.get("stream")) and not found.has("json_for_stream"),
            include_usage=bool(stream_options.get("include_usage")),
            rate=self.tokens_per_second if found.rate is None else found.rate,
            anthropic=anthropic,
            headers={},
            stamp=self._stamped,
            on_complete=self._spend,
        )
        chat.headers = self._headers(chat.request_id)
        with self._lock:
            self._served += 1
        if turn is not None and turn.query is not None:
            await tools.stream_call(chat, response, turn.query, self.tool_memory, turn.tokens)
            return
        if turn is not None and turn.answered:
            tools.cite(chat.plan, turn.answered)
        if not chat.stream:
            await replies.complete(chat, response)
        elif anthropic:
            await replies.stream_anthropic(chat, response)
        else:
            await replies.stream_openai(chat, response)

    def _spend(self) -> None:
        with self._lock:
            self._credits -= 1

    def _stamped(self, piece: str) -> str:
        return self.stamp_piece(piece, time.time()) if self.stamp_piece else piece


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
