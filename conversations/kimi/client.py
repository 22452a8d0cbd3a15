"""The Kimi upstream client: one shared httpx connection pool, typed stream events, mapped errors, bounded retries.

Usage::

    client = get_client()
    async with contextlib.aclosing(client.stream_chat(ChatRequest(model, messages))) as events:
        async for event in events:
            ...

Cancelling the task that iterates (or leaving the ``aclosing`` block) closes the HTTP response: that is how
"stop" reaches the provider. Retries happen only before the provider answered 200, so no delta is ever repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import NamedTuple, Protocol, TypeVar

import httpx
import orjson

from conversations.kimi import anthropic_format, openai_format, provider_state
from conversations.kimi.error_mapping import error_from_response, redact, request_id_from
from conversations.kimi.errors import (
    BadResponse,
    ConnectionFailed,
    Interrupted,
    KimiError,
    Timeout,
)
from conversations.kimi.events import ContentDelta, Event, Finish, ReasoningDelta, ResponseMeta, ToolCalls, Usage
from conversations.kimi.params import ChatRequest, resolve_params
from conversations.kimi.providers import Provider, provider_for_url, provider_named
from conversations.kimi.sse import SSEDecoder

logger = logging.getLogger("conversations.kimi")

T = TypeVar("T")
MODELS_MEMO_SECONDS = 30  # the longest this process trusts its own copy of the model list (see list_models)
# A failed GET /models is not asked again on every send: the fallback list stands for this long.
MODELS_FAILURE_SECONDS = 60
# cache key -> (until, model ids, per-model info from /models); clients are made per call, the memo outlives them
_models_memo: dict[str, tuple[float, list[str], dict[str, dict]]] = {}
MODEL_INFO_FIELDS = ("context_length", "supports_image_in", "supports_video_in", "supports_reasoning")

_shared_http: httpx.AsyncClient | None = None
_shared_loop: asyncio.AbstractEventLoop | None = None
_shared_timeouts: tuple | None = None
_shared_transport: httpx.AsyncBaseTransport | None = None  # transport.py's, when it is not httpx's own


class SharedCache(Protocol):
    """What the client needs of a cache shared by the app's processes (Django's cache has exactly these)."""

    def get(self, key: str): ...

    async def aget(self, key: str): ...

    async def aset(self, key: str, value, seconds: float) -> None: ...


class ChatResult(NamedTuple):
    text: str
    reasoning: str
    finish: str
    usage: Usage | None
    meta: ResponseMeta


def shared_http_client(
    connect_timeout: float, read_timeout: float, max_connections: int = 1000, transport: str = "aiohttp"
) -> httpx.AsyncClient:
    """The process's connection pool, rebuilt when the running event loop changed (an httpx client is bound to the
    loop it first used; tests and ``async_to_sync`` run many loops). ``transport``: what moves its bytes
    (``transport.py``: aiohttp's, or httpx's own)."""
    global _shared_http, _shared_loop, _shared_timeouts, _shared_transport
    loop = asyncio.get_running_loop()
    timeouts = (connect_timeout, read_timeout, max_connections, transport)
    if _shared_http is None or _shared_http.is_closed or _shared_loop is not loop or _shared_timeouts != timeouts:
        # An old client on another loop cannot be closed from here; dropping it releases its sockets on GC.
        if _shared_loop is not loop:
            _abandon_transport()
        # Every streaming answer holds one connection for its whole length: the pool must be at least as large as
        # the answers a worker runs at once, or answer N+1 waits for a free connection and times out.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(20, max_connections))
        # Imported here: aiohttp (12 MB) is loaded by the first upstream call, and never with KIMI_HTTP_TRANSPORT=httpx.
        from conversations.kimi.transport import make_transport

        _shared_transport = make_transport(transport, limits)
        _shared_http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, write=connect_timeout, pool=connect_timeout),
            limits=limits,
            transport=_shared_transport,
            follow_redirects=False,
        )
        _shared_loop = loop
        _shared_timeouts = timeouts
    return _shared_http


async def close_client() -> None:
    """Close the shared pool (on shutdown); a client made on another, finished loop is simply forgotten."""
    global _shared_http, _shared_loop
    client, loop = _shared_http, _shared_loop
    _shared_http = _shared_loop = None
    if client is not None and not client.is_closed:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            await client.aclose()
    _abandon_transport()


def _abandon_transport() -> None:
    """The shared pool's aiohttp session, if it was not closed on its own loop (transport.py)."""
    global _shared_transport
    abandon = getattr(_shared_transport, "abandon", None)  # transport.AiohttpTransport's
    if abandon is not None:
        abandon()
    _shared_transport = None


def meta_from_headers(headers: httpx.Headers) -> ResponseMeta:
    rate_limit = {}
    for raw_name, raw_value in headers.raw:
        name = raw_name.decode("latin-1")
        if name.lower().startswith("x-ratelimit-"):
            rate_limit[name] = raw_value.decode("latin-1")
    return ResponseMeta(
        request_id=request_id_from(headers),
        rate_limit=rate_limit,
        credits_remaining=headers.get("x-credits-remaining", ""),
    )


# How long the end of a body may take after its [DONE] (_read_to_the_end): a server writes it at once.
DRAIN_SECONDS = 0.25


async def _read_to_the_end(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (the chunked body's last, empty chunk: normally in the same packet). Only a body read
    to its end lets its connection go back to the pool; one left unread is closed, and the next answer paid a new
    connection before its request (to a real upstream: TCP and TLS handshakes, round trips to the provider; every
    answer did, docs/kimi-client.md). Bounded by ``DRAIN_SECONDS``: a body that goes on after [DONE] is closed, as
    before, and the answer, complete, is not failed for it."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _rest in chunks:
                pass


class KimiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_format: str = "openai",
        connect_timeout: float = 30.0,
        read_timeout: float = 600.0,
        max_retries: int = 3,
        retry_max_wait: float = 30.0,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 8.0,
        models_cache_seconds: int = 300,
        fallback_models: list[str] | tuple[str, ...] = (),
        record_snapshots: bool = True,
        http: httpx.AsyncClient | None = None,
        provider: str | Provider | None = None,
        max_connections: int = 1000,
        shared_cache: SharedCache | None = None,
        transport: str = "aiohttp",
    ):
        if api_format not in {"openai", "anthropic"}:
            raise ValueError(f"api_format must be 'openai' or 'anthropic', got {api_format!r}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        self.api_format = api_format
        self._format = anthropic_format if api_format == "anthropic" else openai_format
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.retry_max_wait = retry_max_wait
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.models_cache_seconds = models_cache_seconds
        self.fallback_models = list(fallback_models)
        self.record_snapshots = record_snapshots
        self._http_override = http
        self.max_connections = max_connections
        self.transport = transport  # transport.py: what moves the shared pool's bytes
        # Where the model list is shared between processes (Django's cache in the app: kimi/configured.py).
        self._cache = shared_cache
        # Which fields the provider documents (output limit name, thinking, prompt_cache_key): named, else guessed
        # from the base URL (anything unknown, like the offline server, is Moonshot-like).
        self.provider = provider_named(provider) if provider else provider_for_url(self.base_url)

    def __repr__(self) -> str:  # never the key
        return f"KimiClient(base_url={self.base_url!r}, api_format={self.api_format!r})"

    # --- chat -------------------------------------------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        """ResponseMeta, then ReasoningDelta/ContentDelta pieces, Finish, and Usage once at the end.

        Raises a KimiError subclass; after any event was yielded it carries the partial text and reasoning, and no
        retry happens."""
        params = resolve_params(request, self.provider)
        body = orjson.dumps(self._format.build_body(request, params, stream=True))
        started = time.monotonic()
        attempt = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._stream_once(body)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except KimiError as exc:
                delay = None if yielded else self._retry_delay(exc, attempt, started)
                if delay is None:
                    raise
                logger.warning(
                    "kimi stream attempt %d failed (%s, request id %s); retrying in %.2fs",
                    attempt + 1,
                    exc.code,
                    exc.request_id or "-",
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _stream_once(self, body: bytes) -> AsyncIterator[Event]:
        fmt = self._format
        headers = {**self._auth(), "Content-Type": "application/json", "Accept": "text/event-stream"}
        parser = fmt.StreamParser()
        meta = ResponseMeta()
        try:
            async with self._http().stream("POST", self.base_url + fmt.PATH, content=body, headers=headers) as response:
                if response.status_code != 200:
                    raise self._clean(
                        error_from_response(response.status_code, await response.aread(), response.headers)
                    )
                meta = meta_from_headers(response.headers)
                content_type = response.headers.get("content-type", "").lower()
                if "text/event-stream" not in content_type and ("json" in content_type or "html" in content_type):
                    # Some gateways ignore stream=true (or fail with 200): read the whole body and treat it as one.
                    raw = await response.aread()
                    self._note_headers(meta)
                    for event in self._events_from_whole_body(raw, meta):
                        yield event
                    return
                self._note_headers(meta)
                yield meta
                decoder = SSEDecoder()
                chunks = response.aiter_bytes()  # kept: after [DONE] the rest is read from it (_read_to_the_end)
                try:
                    async for chunk in chunks:
                        for sse in decoder.feed(chunk):
                            for event in parser.feed(sse):
                                yield event
                            if parser.done:
                                break
                        if parser.done:
                            break
                    if not parser.done:
                        for sse in decoder.end():
                            for event in parser.feed(sse):
                                yield event
                except httpx.TimeoutException:
                    raise self._partial(Timeout(detail="read timeout mid-stream"), parser, meta)
                except httpx.TransportError as exc:
                    raise self._partial(Interrupted(detail=f"connection lost: {type(exc).__name__}"), parser, meta)
                except KimiError as exc:
                    raise self._partial(self._clean(exc), parser, meta)
                if not parser.done:
                    raise self._partial(Interrupted(detail="stream ended without [DONE]"), parser, meta)
                usage = parser.usage()
                if usage is not None:
                    yield usage
                await _read_to_the_end(chunks)
        except httpx.TimeoutException as exc:
            raise Timeout(detail=f"{type(exc).__name__} before the answer started", request_id=meta.request_id)
        except httpx.TransportError as exc:
            raise ConnectionFailed(detail=redact(f"{type(exc).__name__}: {exc}", self._api_key))

    def _events_from_whole_body(self, raw: bytes, meta: ResponseMeta) -> list[Event]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadResponse(detail="200 answer that is neither SSE nor JSON", request_id=meta.request_id)
        try:
            text, reasoning, finish, usage = self._format.parse_completion(payload)
        except KimiError as exc:
            exc.request_id = exc.request_id or meta.request_id
            raise self._clean(exc)
        events: list[Event] = [meta]
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        if text:
            events.append(ContentDelta(text))
        if finish == "tool_calls":
            calls = self._format.completion_tool_calls(payload)
            if not calls:
                raise BadResponse(detail="finish_reason tool_calls without any tool call", request_id=meta.request_id)
            events.append(ToolCalls(calls))
        if finish:
            events.append(Finish(finish))
        if usage is not None:
            events.append(usage)
        return events

    async def complete_chat(self, request: ChatRequest) -> ChatResult:
        """One non-streaming answer: (text, reasoning, finish, usage, meta)."""
        params = resolve_params(request, self.provider)
        body = orjson.dumps(self._format.build_body(request, params, stream=False))
        return await self._retrying(lambda: self._complete_once(body))

    async def _complete_once(self, body: bytes) -> ChatResult:
        headers = {**self._auth(), "Content-Type": "application/json", "Accept": "application/json"}
        try:
            response = await self._http().post(self.base_url + self._format.PATH, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise Timeout(detail=type(exc).__name__)
        except httpx.TransportError as exc:
            raise ConnectionFailed(detail=redact(f"{type(exc).__name__}: {exc}", self._api_key))
        if response.status_code != 200:
            raise self._clean(error_from_response(response.status_code, response.content, response.headers))
        meta = meta_from_headers(response.headers)
        self._note_headers(meta)
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise BadResponse(detail="200 answer that is not JSON", request_id=meta.request_id)
        try:
            text, reasoning, finish, usage = self._format.parse_completion(payload)
        except KimiError as exc:
            exc.request_id = exc.request_id or meta.request_id
            raise self._clean(exc)
        return ChatResult(text, reasoning, finish, usage, meta)

    # --- retries ----------------------------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return await call()
            except KimiError as exc:
                delay = self._retry_delay(exc, attempt, started)
                if delay is None:
                    raise
                logger.warning("kimi request attempt %d failed (%s); retrying in %.2fs", attempt + 1, exc.code, delay)
                await asyncio.sleep(delay)
                attempt += 1

    def _retry_delay(self, exc: KimiError, attempt: int, started: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (not retryable, too many, too long)."""
        if not exc.retryable or attempt >= self.max_retries:
            return None
        if exc.retry_after is not None:
            delay = exc.retry_after
        else:
            ceiling = min(self.retry_max_delay, self.retry_base_delay * (2**attempt))
            delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter spreads clients that failed together
        if time.monotonic() - started + delay > self.retry_max_wait:
            return None
        return delay

    # --- models, balance, tokens --------------------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """Model ids from GET /models, cached; the configured fallback list when the endpoint is missing or fails
        (remembered for MODELS_FAILURE_SECONDS, so a broken endpoint does not cost every send a request)."""
        ids, _info = await self._models()
        return list(ids)

    async def model_info(self) -> dict[str, dict]:
        """Per-model facts GET /models sent (Moonshot: context_length, supports_image_in, supports_video_in,
        supports_reasoning), by id; models without any are absent, and gateways send none. Pass an entry to
        ``params.model_capabilities(model, info)``: what the provider says wins over the name-based rules."""
        _ids, info = await self._models()
        return {model: dict(fields) for model, fields in info.items()}

    def _models_key(self) -> str:
        return "kimi:models:v2:" + hashlib.sha256(self.base_url.encode()).hexdigest()[:16]

    def cached_model_ids(self) -> list[str] | None:
        """The model list last read from GET /models, if this process or the cache still holds it; never asks the
        provider (for synchronous pages such as the price admin)."""
        key = self._models_key()
        memo = _models_memo.get(key)
        if memo is not None and time.monotonic() < memo[0]:
            return list(memo[1])
        cached = self._cache.get(key) if self._cache is not None else None
        return list(cached["ids"]) if isinstance(cached, dict) and cached.get("ids") else None

    async def _models(self) -> tuple[list[str], dict[str, dict]]:
        # Every send checks its model against this list: a copy in this process spares each send a trip to the cache
        # (which, for Django's caches, runs in the thread that all database calls share).
        key = self._models_key()
        memo = _models_memo.get(key)
        if memo is not None and time.monotonic() < memo[0]:
            return memo[1], memo[2]
        cached = await self._cache.aget(key) if self._cache is not None else None
        if isinstance(cached, dict) and cached.get("ids"):
            self._remember_models(key, cached["ids"], cached.get("info") or {}, self._memo_seconds())
            return list(cached["ids"]), dict(cached.get("info") or {})
        loaded = await self._fetch_models()
        if loaded is None:
            ids, info, seconds = list(self.fallback_models), {}, MODELS_FAILURE_SECONDS
        else:
            (ids, info), seconds = loaded, self.models_cache_seconds
        if seconds > 0 and self._cache is not None:
            await self._cache.aset(key, {"ids": ids, "info": info}, seconds)
        self._remember_models(key, ids, info, self._memo_seconds() if loaded is not None else seconds)
        return ids, info

    async def _fetch_models(self) -> tuple[list[str], dict[str, dict]] | None:
        try:
            response = await self._http().get(self.base_url + "/models", headers=self._auth(), timeout=self._short())
            if response.status_code != 200:
                logger.warning("GET /models answered %s; using the fallback model list", response.status_code)
                return None
            data = orjson.loads(response.content).get("data")
            entries = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError):
            logger.warning("GET /models failed; using the fallback model list", exc_info=True)
            return None
        if not entries:
            return None
        info = {}
        for entry in entries:
            fields = {name: entry[name] for name in MODEL_INFO_FIELDS if name in entry}
            if fields:
                info[entry["id"]] = fields
        return [m["id"] for m in entries], info

    def _memo_seconds(self) -> float:
        return min(self.models_cache_seconds, MODELS_MEMO_SECONDS)

    def _remember_models(self, key: str, ids, info: dict, seconds: float) -> None:
        if seconds > 0:
            _models_memo[key] = (time.monotonic() + seconds, list(ids), dict(info))

    async def fetch_balance(self):
        """Record and return a ProviderSnapshot: Moonshot's balance endpoint when it exists, else the last
        rate-limit/credits headers seen, else the latest stored snapshot (None when nothing is known)."""
        last = provider_state.last_meta()
        balance = await self._balance_from_endpoint()
        if balance is not None:
            return await provider_state.record_balance(balance, last, "balance_endpoint")
        if last is not None:
            return await provider_state.record_balance(None, last, "headers")
        return await provider_state.latest()

    async def _balance_from_endpoint(self) -> Decimal | None:
        try:
            response = await self._http().get(
                self.base_url + "/users/me/balance", headers=self._auth(), timeout=self._short()
            )
            if response.status_code != 200:
                return None
            data = orjson.loads(response.content).get("data") or {}
            value = data.get("available_balance")
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                return None
            return Decimal(str(value))
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, InvalidOperation):
            logger.info("no balance endpoint at this provider", exc_info=True)
            return None

    async def estimate_tokens(self, model: str, messages: list[dict]) -> int | None:
        """Moonshot's token counter (POST /tokenizers/estimate-token-count); None where it does not exist."""
        body = {"model": model, "messages": [openai_format._message(m) for m in messages]}
        try:
            response = await self._http().post(
                self.base_url + "/tokenizers/estimate-token-count",
                content=orjson.dumps(body),
                headers={**self._auth(), "Content-Type": "application/json"},
                timeout=self._short(),
            )
            if response.status_code != 200:
                return None
            total = (orjson.loads(response.content).get("data") or {}).get("total_tokens")
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError):
            return None
        return total if isinstance(total, int) and not isinstance(total, bool) else None

    # --- files (Moonshot's files API [doc: spec, files]; gateways have none: providers.Provider.files_api) --------

    async def upload_file(self, name: str, data: bytes, content_type: str, purpose: str = "file-extract") -> dict:
        """POST /files (multipart ``file`` + ``purpose``) → the file object ``{id, bytes, filename, status, …}``.
        Not retried: an upload that timed out may have created a file, and a retry would create a second one."""
        response = await self._files_call(
            "file upload", "POST", "/files", files={"file": (name, data, content_type)}, data={"purpose": purpose}
        )
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise BadResponse(detail="file upload: the answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise BadResponse(detail="file upload: no file id in the answer")
        return body

    async def file_content(self, file_id: str) -> str:
        """GET /files/{id}/content: the extracted text, sent as text/plain, or (a newer doc [?]) JSON whose
        ``content`` holds it; both are accepted."""

        async def once() -> str:
            response = await self._files_call("file content", "GET", f"/files/{file_id}/content", timeout=self._short())
            if "json" in response.headers.get("content-type", ""):
                try:
                    body = orjson.loads(response.content)
                except orjson.JSONDecodeError:
                    raise BadResponse(detail="file content: invalid JSON") from None
                if isinstance(body, dict) and isinstance(body.get("content"), str):
                    return body["content"]
                raise BadResponse(detail="file content: JSON without a 'content' string")
            return response.text

        return await self._retrying(once)

    async def delete_file(self, file_id: str) -> bool:
        """DELETE /files/{id}; True when deleted, False when the provider no longer has it (404)."""

        async def once() -> bool:
            response = await self._files_call(
                "file delete", "DELETE", f"/files/{file_id}", timeout=self._short(), missing_ok=True
            )
            return response.status_code != 404

        return await self._retrying(once)

    async def _files_call(self, what: str, method: str, path: str, *, missing_ok: bool = False, **kwargs):
        """One files-API request with its failures mapped as every call's are; a 404 is returned when
        ``missing_ok`` (a file the provider no longer has), any other non-200 raised."""
        try:
            response = await self._http().request(method, self.base_url + path, headers=self._auth(), **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(detail=f"{what}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise ConnectionFailed(detail=f"{what}: {type(exc).__name__}") from None
        if response.status_code == 200 or (missing_ok and response.status_code == 404):
            return response
        raise self._clean(error_from_response(response.status_code, response.content, response.headers))

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        return self._http_override or shared_http_client(
            self.connect_timeout, self.read_timeout, self.max_connections, self.transport
        )

    def _auth(self) -> dict[str, str]:
        return self._format.auth_headers(self._api_key)

    def _short(self) -> httpx.Timeout:
        return httpx.Timeout(min(self.read_timeout, 20.0), connect=self.connect_timeout)

    def _note_headers(self, meta: ResponseMeta) -> None:
        provider_state.remember(meta)
        if self.record_snapshots:
            provider_state.headers.offer(meta)  # written by a task of its own: the stream never waits for it

    def _clean(self, exc: KimiError) -> KimiError:
        exc.detail = redact(exc.detail, self._api_key)
        return exc

    def _partial(self, exc: KimiError, parser, meta: ResponseMeta) -> KimiError:
        exc.partial_text = "".join(parser.text)
        exc.partial_reasoning = "".join(parser.reasoning)
        exc.request_id = exc.request_id or meta.request_id
        if exc.usage is None:
            exc.usage = parser.usage()
        return self._clean(exc)
