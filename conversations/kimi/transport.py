"""The layer under httpx that moves the upstream's bytes: aiohttp's connection pool and its C HTTP parser.

httpx stays the client: requests are built, timed out, answered and failed as ``httpx`` objects and ``httpx``
errors, so nothing above this module knows which transport ran. Only the bytes move differently. httpx's own stack
(httpcore → h11 → anyio) costs a pure-Python HTTP event, an anyio cancel scope and a few awaits per socket read; an
answer streamed at 20 tokens/s is one read per token, and at a few hundred concurrent answers that per-read cost was
the worker's largest (docs/performance.md, "What limits the relay now"). aiohttp parses in C (llhttp) and hands
whatever bytes have arrived to one ``read``. ``KIMI_HTTP_TRANSPORT=httpx`` goes back to httpx's own.

aiohttp's errors are mapped to the httpx error httpx's own transport raises for the same failure (refused
connection: ``ConnectError``; no answer in time: ``ConnectTimeout`` / ``ReadTimeout``; a closed or truncated answer:
``RemoteProtocolError``), which the client maps to its own errors (``client.py``). A request body httpx has not read
yet (a multipart upload to the files API) is read first and sent with its length, as httpx's transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

TRANSPORTS = ("aiohttp", "httpx")


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request, *, reading: bool) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connect (or waiting for a pooled connection) took too long
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except (TimeoutError, aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        message = "peer closed connection without sending complete message body" if reading else str(exc)
        raise httpx.RemoteProtocolError(message or "Server disconnected", request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:  # a truncated body, a malformed answer
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientOSError as exc:
        raise (httpx.ReadError if reading else httpx.WriteError)(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from exc


@contextlib.contextmanager
def _timeout_as(error: type[httpx.TimeoutException], request: httpx.Request) -> Iterator[None]:
    """The bound of ``asyncio.timeout`` around a request (its own TimeoutError, not aiohttp's) as an httpx error."""
    try:
        yield
    except TimeoutError as exc:
        if isinstance(exc, aiohttp.ClientError):
            raise
        raise error("no answer within the write and read timeouts", request=request) from exc


class _IdleWatch:
    """The body's read timeout (httpx's ``read``: no byte for that long fails the read with ``ReadTimeout``), kept by
    one timer a stream that looks every ``seconds / 8`` whether bytes came, instead of aiohttp's ``sock_read``, which
    cancels and schedules a timer for every chunk: at 600 answers streaming, 7% of the worker's CPU (docs/
    performance.md). Never early; at most an eighth late (a byte seen is dated at the look that saw it)."""

    CHECKS = 8

    def __init__(self, response: aiohttp.ClientResponse, seconds: float) -> None:
        self._response = response
        self._content = response.content
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._seen = self._content.total_bytes
        self._since = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(seconds / self.CHECKS, self._look)

    def _look(self) -> None:
        self._handle = None
        if self._response.closed or self._content.is_eof():
            return
        now, total = self._loop.time(), self._content.total_bytes
        if total != self._seen:
            self._seen, self._since = total, now
        elif now - self._since >= self._seconds:
            # What aiohttp's own timer does: the waiting read fails with it (mapped to httpx.ReadTimeout).
            self._content.set_exception(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
            return
        self._handle = self._loop.call_later(self._seconds / self.CHECKS, self._look)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Body(httpx.AsyncByteStream):
    """The response body, chunk by chunk: an iterator object rather than an async generator, so an answer stopped
    mid-stream leaves no suspended generator behind for the garbage collector to finalize."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, read: float | None = None) -> None:
        self._response = response
        self._request = request
        self._watch = None
        protocol = response.connection.protocol if response.connection is not None else None
        if read is not None and protocol is not None:  # None: the body is read already, or nothing bounds a read
            protocol.read_timeout = None  # aiohttp's per-chunk timer off: the watch below bounds the body instead
            protocol.start_timeout()  # (with no timeout set, this cancels the timer the headers' read left)
            self._watch = _IdleWatch(response, read)

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        with _as_httpx_errors(self._request, reading=True):
            # Whatever has arrived, in one piece: an SSE stream's events as the upstream wrote them.
            chunk = await self._response.content.readany()
        if not chunk:
            self._stop_watch()
            raise StopAsyncIteration
        return chunk

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    async def aclose(self) -> None:
        self._stop_watch()
        # Back to the pool when the body was read to its end; closed otherwise (an answer stopped mid-stream).
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (a pool of up to ``limits.max_connections``), bound to the loop that first uses it."""

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def _proxy_for(self, url: httpx.URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy ``HTTP(S)_PROXY`` / ``NO_PROXY`` give ``url``'s scheme and host, read once per host, as httpx
        reads the environment's proxies once per client. aiohttp's ``trust_env`` would read them, and ``~/.netrc``
        (which httpx's own transport ignores), on every request, each in a thread of the default executor: two
        thread hops before every answer's request (docs/performance.md, session 8)."""
        where = (url.scheme, url.host)
        if where not in self._proxies:
            try:
                self._proxies[where] = get_env_proxy_for_url(URL(str(url)))
            except LookupError:  # none for this scheme, or NO_PROXY names the host
                self._proxies[where] = (None, None)
        return self._proxies[where]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                ssl=self._ssl,
            )
            # Proxies from the environment: ``_proxy_for``. No decompression here: httpx decodes the body by its
            # Content-Encoding, as it does for its own transport.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        pool, connect, read = timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read")
        phases = (pool, connect, timeouts.get("write"), read)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        # aiohttp starts its read timer only once the body is written and has no write timeout: a peer that stops
        # reading an upload would hold it for ever. httpx bounds each phase; the answer's headers are bounded here
        # by their sum (the body, once the headers came, by `sock_read` per chunk, as httpx's read timeout does).
        until_headers = None if None in phases else sum(phases)
        proxy, proxy_auth = self._proxy_for(request.url)
        with _as_httpx_errors(request, reading=False), _timeout_as(httpx.WriteTimeout, request):
            async with asyncio.timeout(until_headers):
                response = await self._client().request(
                    request.method,
                    str(request.url),
                    headers=list(request.headers.multi_items()),
                    data=body or None,
                    allow_redirects=False,
                    compress=None,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        # aiohttp's `connect`: waiting for a pooled connection and making one (httpx's pool + connect).
                        connect=None if pool is None or connect is None else pool + connect,
                        sock_connect=connect,
                        sock_read=read,
                    ),
                )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request, read),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def abandon(self) -> None:
        """Drop the session without awaiting: its loop is finished or not the running one (tests and ``async_to_sync``
        run many loops), so it cannot be closed from here. Its sockets are closed now if their loop still runs, else
        they went with the loop; either way without aiohttp's "unclosed session" warnings at garbage collection."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        connector = session.connector
        session.detach()
        if connector is not None:
            with contextlib.suppress(Exception):  # what aiohttp's own __del__ does; best effort if that ever changes
                connector._close()


def make_transport(name: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """The transport ``KIMI_HTTP_TRANSPORT`` names; None: httpx's own (what httpx.AsyncClient builds by default)."""
    if name not in TRANSPORTS:
        raise ValueError(f"the HTTP transport must be one of {', '.join(TRANSPORTS)}, got {name!r}")
    return AiohttpTransport(limits=limits) if name == "aiohttp" else None
