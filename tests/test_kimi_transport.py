"""The transport under httpx (conversations/kimi/transport.py): a failure that happens before any answer arrives is
the same error of the client whichever transport moved the bytes (the client tests run on both, through the
``kimi_transport`` fixture; these add the failures the offline server cannot stage: a peer that hangs up at once, or
never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from conversations.kimi import errors
from conversations.kimi.client import DRAIN_SECONDS, close_client, shared_http_client
from conversations.kimi.params import ChatRequest
from conversations.kimi.transport import AiohttpTransport, make_transport


def ask() -> ChatRequest:
    return ChatRequest(model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}])


@contextlib.asynccontextmanager
async def raw_server(handle):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


async def hang_up(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def never_answer(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(5)
    writer.close()


async def half_an_answer(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\n")
    writer.write(b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
    await writer.drain()
    writer.close()


async def never_read_the_body(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(5)  # the request's body fills the socket buffers, and the client's write stalls
    writer.close()


async def collect(client) -> list:
    return [event async for event in client.stream_chat(ask())]


async def test_a_peer_that_hangs_up_before_answering_is_a_connection_error(make_kimi_client):
    async with raw_server(hang_up) as base_url:
        with pytest.raises(errors.ConnectionFailed) as caught:
            await collect(make_kimi_client(base_url=base_url, max_retries=0))
    assert caught.value.retryable


async def test_a_peer_that_never_answers_is_a_timeout(make_kimi_client):
    async with raw_server(never_answer) as base_url:
        with pytest.raises(errors.Timeout) as caught:
            await collect(make_kimi_client(base_url=base_url, max_retries=0, read_timeout=0.3))
    assert caught.value.code == "upstream_timeout"


async def test_a_body_cut_short_keeps_what_arrived(make_kimi_client):
    async with raw_server(half_an_answer) as base_url:
        with pytest.raises(errors.Interrupted) as caught:
            await collect(make_kimi_client(base_url=base_url, max_retries=0))
    assert caught.value.partial_text == "Hel"


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="aiohttp, httpx"):
        make_transport("curl", httpx.Limits())
    assert make_transport("httpx", httpx.Limits()) is None


async def test_the_shared_pool_uses_the_transport_it_is_given():
    try:
        pool = shared_http_client(5, 5, 10, "aiohttp")
        assert isinstance(pool._transport, AiohttpTransport)
        assert shared_http_client(5, 5, 10, "httpx")._transport is not pool._transport
        assert not isinstance(shared_http_client(5, 5, 10, "httpx")._transport, AiohttpTransport)
    finally:
        await close_client()


async def test_an_upload_the_peer_stops_reading_is_a_timeout(make_kimi_client):
    """httpx bounds a write; aiohttp has no write timeout and starts its read timer after the body: the transport
    bounds the answer's headers by the sum of the phases, so a stalled upload fails instead of hanging."""
    async with raw_server(never_read_the_body) as base_url:
        client = make_kimi_client(base_url=base_url, max_retries=0, connect_timeout=0.2, read_timeout=0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(errors.Timeout):
            await client.upload_file("big.pdf", b"%PDF-1.4 " + b"x" * 20_000_000, "application/pdf")
    assert asyncio.get_running_loop().time() - started < 3


def _piece(text: str) -> bytes:
    return b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


def trickle(pauses: list[float]):
    """An answer whose pieces come after ``pauses`` (seconds), then its end."""

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n, pause in enumerate(pauses):
            await asyncio.sleep(pause)
            body = _piece(f"p{n} ")
            writer.write(b"%x\r\n%s\r\n" % (len(body), body))
            await writer.drain()
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()
        writer.close()

    return handle


async def test_pieces_slower_than_the_timers_look_but_within_the_read_timeout_are_not_cut(make_kimi_client):
    """The body's read timeout is one timer a stream that looks every eighth of it (transport._IdleWatch): pieces
    0.25 s apart under a read timeout of 0.4 s are an answer, not a timeout, however the looks fall."""
    async with raw_server(trickle([0.25] * 8)) as base_url:
        events = await collect(make_kimi_client(base_url=base_url, max_retries=0, read_timeout=0.4))
    assert "".join(getattr(e, "text", "") for e in events) == "".join(f"p{n} " for n in range(8))


@pytest.mark.parametrize("silence", [0.6, 3.0])
async def test_a_body_that_goes_silent_fails_after_the_read_timeout_never_before(make_kimi_client, silence):
    read = 0.4
    async with raw_server(trickle([0.0, 0.1, silence])) as base_url:
        client = make_kimi_client(base_url=base_url, max_retries=0, read_timeout=read)
        started = time.monotonic()
        received = []
        with pytest.raises(errors.Timeout) as caught:
            async for event in client.stream_chat(ask()):
                received.append((time.monotonic(), event))
        ended = time.monotonic()
    last_piece = received[-1][0]
    assert caught.value.partial_text == "p0 p1 "
    # Never early; late by at most an eighth of the timeout (plus a loop's scheduling slack).
    assert read <= ended - last_piece <= read * 1.125 + 0.1, (ended - last_piece, ended - started)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def keeping_connections(connections: list, end_after: float):
    """A server that keeps its connections for more requests (HTTP/1.1's default, as the real API does): each request
    gets a short streamed answer, then its body's last chunk ``end_after`` seconds after the [DONE]."""

    async def handle(reader, writer):
        connections.append(writer)
        # CancelledError too: the client's pool keeps the connection until after the server has gone (end of test).
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                await reader.readexactly(next(int(line[15:]) for line in lines if line.startswith(b"content-length:")))
                writer.write(STREAM_HEAD)
                for body in (_piece("Hel"), _piece("lo"), b"data: [DONE]\n\n"):
                    writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                await writer.drain()
                await asyncio.sleep(end_after)
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    return handle


@pytest.mark.parametrize("end_after", [0.0, 0.05])
async def test_a_streamed_answer_leaves_its_connection_for_the_next_one(make_kimi_client, end_after):
    """The body after [DONE] is read to its end (in the same packet or a later one), so its connection goes back to
    the pool: five answers, one connection. Each answer opened one before (with TLS to the real API, a handshake and
    its round trips before every request)."""
    connections: list = []
    async with raw_server(keeping_connections(connections, end_after)) as base_url:
        client = make_kimi_client(base_url=base_url, max_retries=0)
        texts = ["".join(getattr(e, "text", "") for e in await collect(client)) for _ in range(5)]
    assert texts == ["Hello"] * 5
    assert len(connections) == 1


async def test_a_body_that_goes_on_after_done_does_not_hold_the_answer(make_kimi_client):
    """A server that keeps the body open after [DONE]: the answer ends, complete, within DRAIN_SECONDS, and that
    connection is closed (the next answer opens another), as before."""
    connections: list = []
    async with raw_server(keeping_connections(connections, end_after=5.0)) as base_url:
        client = make_kimi_client(base_url=base_url, max_retries=0)
        started = time.monotonic()
        first = await collect(client)
        took = time.monotonic() - started
        second = await collect(client)
    assert "".join(getattr(e, "text", "") for e in first + second) == "HelloHello"
    assert took < DRAIN_SECONDS + 1.0
    assert len(connections) == 2


def recording(seen: list[bytes]):
    """A peer that answers every request 200 "ok" and keeps its head (request line and headers)."""

    async def handle(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    return handle


async def _get(url: str, **headers) -> httpx.Response:
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=4))
    try:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            return await client.get(url, headers=headers)
    finally:
        await transport.aclose()


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_the_environments_proxy_carries_the_request(no_proxy_env):
    """HTTP_PROXY applies to the aiohttp transport (read once per host, not on every request)."""
    seen: list[bytes] = []
    async with raw_server(recording(seen)) as proxy_url:
        no_proxy_env.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        response = await _get("http://upstream.invalid/v1/models")
    assert response.text == "ok"
    assert seen[0].startswith(b"GET http://upstream.invalid/v1/models HTTP/1.1\r\n")  # a proxy's absolute form


async def test_no_proxy_sends_the_request_straight_to_its_host(no_proxy_env):
    seen: list[bytes] = []
    async with raw_server(recording(seen)) as base_url:
        no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        response = await _get(base_url + "/models")
    assert response.text == "ok"
    assert seen[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


async def test_a_netrc_entry_for_the_host_changes_nothing(no_proxy_env, tmp_path):
    """As httpx's own transport: ~/.netrc is not read; the request's own Authorization header goes as it is."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    no_proxy_env.setenv("NETRC", str(netrc))
    seen: list[bytes] = []
    async with raw_server(recording(seen)) as base_url:
        plain = await _get(base_url + "/models")
        bearer = await _get(base_url + "/models", Authorization="Bearer sk-test")
    assert plain.text == bearer.text == "ok"
    assert b"authorization" not in seen[0].lower()
    assert b"\r\nauthorization: Bearer sk-test\r\n" in seen[1].replace(b"Authorization", b"authorization")
