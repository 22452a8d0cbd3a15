"""The offline Kimi-compatible server at the byte level: wire shapes, headers, framing quirks, faults, the command."""

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.core.management import CommandError, call_command

from conversations.kimi.tokens import estimate_messages_locally
from conversations.offline import answers
from conversations.offline.server import OfflineKimiServer

ROOT = Path(__file__).resolve().parent.parent


def raw_request(handle, path: str, body: dict | None = None, headers: dict | None = None) -> bytes:
    """An HTTP/1.1 request to the offline server as bytes: a POST of ``body`` as JSON, or a GET without one."""
    payload = b"" if body is None else json.dumps(body).encode()
    method = "GET" if body is None else "POST"
    lines = [f"{method} /v1{path} HTTP/1.1", f"Host: {urlsplit(handle.base_url).hostname}",
             f"Authorization: Bearer {handle.api_key}"]  # fmt: skip
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def open_raw(handle) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(urlsplit(handle.base_url).hostname, urlsplit(handle.base_url).port)


async def raw_post(handle, path: str, body: dict, headers: dict | None = None) -> tuple[bytes, list[bytes]]:
    """POST over a bare socket; returns (head, body chunks as framed by chunked encoding, or [body])."""
    reader, writer = await open_raw(handle)
    writer.write(raw_request(handle, path, body, {"Connection": "close", **(headers or {})}))
    await writer.drain()
    raw = await reader.read()  # asked to, the server closes the connection after the answer
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return head, [rest]
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            chunks.append(b"")  # the terminating chunk
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head, chunks


def chat(text: str, model: str = "kimi-k2", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": True, **extra}


def content_length(head: bytes) -> int:
    return int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])


def body_of(chunks: list[bytes]) -> bytes:
    return b"".join(chunks)


def data_payloads(body: bytes) -> list:
    """The data payloads of a plain LF stream."""
    events = []
    for block in body.decode().split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append(data[0] if data[0] == "[DONE]" else json.loads("\n".join(data)))
    return events


async def test_stream_wire_format_headers_and_usage(offline_kimi):
    head, chunks = await raw_post(offline_kimi, "/chat/completions", chat("hi", stream_options={"include_usage": True}))
    lower = head.lower()
    assert head.startswith(b"HTTP/1.1 200")
    for name in (b"transfer-encoding: chunked", b"content-type: text/event-stream", b"msh-request-id: ",
                 b"x-request-id: ", b"x-ratelimit-limit: 60", b"x-ratelimit-remaining: ", b"x-ratelimit-reset: ",
                 b"x-credits-remaining: "):  # fmt: skip
        assert name in lower
    assert chunks[-1] == b""  # properly terminated
    events = data_payloads(body_of(chunks))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1] == "[DONE]"
    usage_chunk, final = events[-2], events[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == final["choices"][0]["usage"]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-3])
    assert content == offline_kimi.log.last_chat.sent_text
    prompt = estimate_messages_locally(chat("hi")["messages"])
    pieces = len(answers.split_pieces(content))
    assert usage_chunk["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": pieces,
        "total_tokens": prompt + pieces,
    }


async def test_no_top_level_usage_chunk_unless_asked(offline_kimi):
    _, chunks = await raw_post(offline_kimi, "/chat/completions", chat("hi"))
    events = data_payloads(body_of(chunks))
    assert all(e == "[DONE]" or e["choices"] for e in events)
    assert "usage" in events[-2]["choices"][0]


async def test_thinking_models_stream_reasoning_first(offline_kimi):
    for model, thinking, expects in [
        ("kimi-k2-thinking", None, True),
        ("kimi-k3", None, True),
        ("kimi-k2.6", None, True),
        ("kimi-k2.6", {"type": "disabled"}, False),
        ("kimi-k2.5", {"type": "enabled"}, True),
        ("kimi-k2", None, False),
    ]:
        extra = {"thinking": thinking} if thinking else {}
        _, chunks = await raw_post(offline_kimi, "/chat/completions", chat("hi", model=model, **extra))
        deltas = [e["choices"][0]["delta"] for e in data_payloads(body_of(chunks))[:-1] if e["choices"]]
        kinds = [k for d in deltas for k in d if k in {"reasoning_content", "content"} and d[k]]
        assert ("reasoning_content" in kinds) is expects, model
        if expects:
            assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning_content")


@pytest.mark.parametrize(
    ("quirk", "check"),
    [
        ("crlf", lambda b: b"\r\n\r\n" in b and b.count(b"\r\n") == b.count(b"\n")),
        ("cr", lambda b: b"\r\r" in b and b"\n" not in b.replace(b"\\n", b"")),
        ("nospace", lambda b: b"data:{" in b and b"data: " not in b),
        ("multiline", lambda b: b.count(b"data: ") > 3 * b.count(b"\n\n")),
        ("comments", lambda b: all(x in b for x in (b": keep-alive\n", b"event: message\n", b"id: 1\n", b"retry: "))),
        ("empty_choices", lambda b: b'"choices":[]' in b),
    ],
)
async def test_framing_quirks_are_on_the_wire(offline_kimi, quirk, check):
    _, chunks = await raw_post(offline_kimi, "/chat/completions", chat(f"hi [[fault:{quirk}]]"))
    assert check(body_of(chunks))
    _, plain = await raw_post(offline_kimi, "/chat/completions", chat("hi"))
    assert not check(body_of(plain))  # the check can tell a quirky stream from a plain one


async def test_split_utf8_writes_tiny_chunks_that_cut_characters(offline_kimi):
    _, chunks = await raw_post(offline_kimi, "/chat/completions", chat("[[echo]] 你好，世界。 [[fault:split_utf8]]"))
    assert max(len(c) for c in chunks) <= 3
    cut = 0
    for chunk in chunks:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            cut += 1
    assert cut > 0
    assert "你好，世界。" in "".join(
        e["choices"][0]["delta"].get("content", "") for e in data_payloads(body_of(chunks))[1:-2]
    )


async def test_drop_and_no_done_and_error_midstream_on_the_wire(offline_kimi):
    _, dropped = await raw_post(offline_kimi, "/chat/completions", chat("hi [[fault:drop_midstream]]"))
    assert dropped[-1] != b"" and b"[DONE]" not in body_of(dropped)
    _, no_done = await raw_post(offline_kimi, "/chat/completions", chat("hi [[fault:no_done]]"))
    assert no_done[-1] == b"" and b'"finish_reason":"stop"' in body_of(no_done) and b"[DONE]" not in body_of(no_done)
    _, failed = await raw_post(offline_kimi, "/chat/completions", chat("hi [[fault:error_midstream]]"))
    events = data_payloads(body_of(failed))
    assert events[-1]["error"]["type"] == "server_error" and len(events) > 2


@pytest.mark.parametrize(
    ("fault", "status", "shape"),
    [
        ("status:400", 400, {"type": "invalid_request_error"}),
        ("status:401", 401, {"type": "invalid_authentication_error"}),
        ("status:403", 403, {"type": "permission_denied_error"}),
        ("status:404", 404, {"type": "resource_not_found_error"}),
        ("status:429", 429, {"type": "rate_limit_reached_error"}),
        ("status:500", 500, {"type": "server_error"}),
        ("status:503", 503, {"type": "server_unavailable"}),
        ("quota", 429, {"type": "exceeded_current_quota_error"}),
        ("overloaded", 429, {"type": "engine_overloaded_error"}),
        ("acedata:too_many_requests", 429, {"code": "too_many_requests"}),
    ],
)
async def test_error_faults_have_the_provider_shape(offline_kimi, fault, status, shape):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            offline_kimi.base_url + "/chat/completions",
            json=chat("hi"),
            headers={"Authorization": f"Bearer {offline_kimi.api_key}", "X-Offline-Fault": fault},
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert shape.items() <= error.items() and error["message"]
    if fault.startswith("acedata"):
        assert response.json()["trace_id"]
    if fault == "status:429":
        assert response.headers["retry-after"] == "1"


async def test_html504_and_429_then_ok_counter(offline_kimi):
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {offline_kimi.api_key}"}
        page = await http.post(
            offline_kimi.base_url + "/chat/completions", json=chat("x [[fault:html504]]"), headers=auth
        )
        assert page.status_code == 504 and page.headers["content-type"] == "text/html"
        statuses = []
        for prompt in ("a [[fault:429_then_ok:2]]", "a [[fault:429_then_ok:2]]", "b [[fault:429_then_ok:2]]",
                       "a [[fault:429_then_ok:2]]"):  # fmt: skip
            response = await http.post(offline_kimi.base_url + "/chat/completions", json=chat(prompt), headers=auth)
            statuses.append((response.status_code, response.headers.get("retry-after")))
    assert statuses == [(429, "0"), (429, "0"), (429, "0"), (200, None)]  # counted per prompt


async def test_wrong_key_gets_401_in_each_format(offline_kimi):
    async with httpx.AsyncClient() as http:
        openai = await http.post(
            offline_kimi.base_url + "/chat/completions", json=chat("hi"), headers={"Authorization": "Bearer nope"}
        )
        anthropic = await http.post(
            offline_kimi.base_url + "/messages", json={**chat("hi"), "max_tokens": 10}, headers={"X-API-Key": "nope"}
        )
        ok = await http.post(
            offline_kimi.base_url + "/messages",
            json={**chat("hi"), "stream": False, "max_tokens": 1000},
            headers={"X-API-Key": offline_kimi.api_key},
        )
    assert openai.status_code == 401 and openai.json()["error"]["type"] == "invalid_authentication_error"
    assert anthropic.status_code == 401 and anthropic.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key"},
    }
    assert ok.status_code == 200 and ok.json()["type"] == "message" and ok.json()["stop_reason"] == "end_turn"
    assert offline_kimi.chat_count == 3


async def test_anthropic_stream_events(offline_kimi):
    body = {**chat("hi", model="kimi-k2-thinking"), "max_tokens": 500}
    head, chunks = await raw_post(offline_kimi, "/messages", body)
    blocks = body_of(chunks).decode().split("\n\n")
    names = [b.split("\n")[0].removeprefix("event: ") for b in blocks if b]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    deltas = [
        json.loads(b.split("\n")[1][6:])["delta"]["type"] for b in blocks if b.startswith("event: content_block_delta")
    ]
    assert deltas.index("text_delta") > deltas.index("thinking_delta")


async def test_other_endpoints(offline_kimi):
    auth = {"Authorization": f"Bearer {offline_kimi.api_key}"}
    async with httpx.AsyncClient(base_url=offline_kimi.base_url, headers=auth) as http:
        models = (await http.get("/models")).json()
        balance = (await http.get("/users/me/balance")).json()
        messages = [{"role": "user", "content": "你好"}]
        tokens = await http.post("/tokenizers/estimate-token-count", json={"model": "kimi-k2", "messages": messages})
        missing = await http.get("/nothing")
        complete = await http.post("/chat/completions", json={**chat("hi"), "stream": False})
    assert models["object"] == "list" and {"id", "object", "owned_by"} <= models["data"][0].keys()
    assert balance["data"]["available_balance"] == 49.58 and balance["status"] is True
    assert tokens.json() == {"data": {"total_tokens": estimate_messages_locally(messages)}}
    assert missing.status_code == 404
    assert complete.json()["object"] == "chat.completion" and complete.json()["usage"]["total_tokens"] > 0
    assert offline_kimi.chat_count == 1 and offline_kimi.last_request_body["stream"] is False


async def test_rate_paces_the_stream(offline_kimi):
    started = time.monotonic()
    await raw_post(offline_kimi, "/chat/completions", chat("hi [[tokens:10]] [[rate:40]]"))
    assert time.monotonic() - started >= 0.2  # ten pieces at 40/s
    started = time.monotonic()
    await raw_post(offline_kimi, "/chat/completions", chat("hi [[tokens:10]]"))
    assert time.monotonic() - started < 0.2


async def test_parameters_checked_like_the_real_provider(offline_kimi):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {offline_kimi.api_key}"}) as http:
        url = offline_kimi.base_url + "/chat/completions"
        too_hot = await http.post(url, json=chat("hi", temperature=1.5))
        fixed = await http.post(url, json=chat("hi", model="kimi-k2.6", temperature=0.3))
        unknown = await http.post(url, json=chat("hi", model="gpt-9"))
    assert too_hot.status_code == 400 and fixed.status_code == 400
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "resource_not_found_error"


def test_answers_look_real_and_are_deterministic():
    messages = [{"role": "user", "content": "hello"}]
    answer = answers.build_answer(messages, thinks=False)
    assert answer == answers.build_answer(messages, thinks=False)
    text = answer.text
    assert text.startswith("## ") and "\n- **" in text and "```python" in text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert len(answers.build_answer(messages, thinks=False, tokens=500).content) == 500
    assert answers.split_pieces("a b  你好\n") == ["a", " b", "  你", "好", "\n"]


def test_stamp_piece_hook_sees_every_content_piece():
    stamps = []
    server = OfflineKimiServer(tokens_per_second=0, stamp_piece=lambda piece, at: stamps.append(at) or piece.upper())
    handle = server.run_in_thread()
    try:
        with httpx.Client() as http:
            response = http.post(
                handle.base_url + "/chat/completions",
                json=chat("[[echo]] abc def"),
                headers={"Authorization": f"Bearer {handle.api_key}"},
            )
        assert '"content":"ABC"' in response.text and '"content":" DEF"' in response.text
        assert len(stamps) == 2
    finally:
        handle.stop()


def test_command_refuses_non_loopback_hosts():
    with pytest.raises(CommandError, match="loopback"):
        call_command("offlinekimi", host="0.0.0.0", port=0)


def test_command_serves_on_loopback():
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KIMI_API_KEY": ""}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "offlinekimi", "--port", "0", "--rate", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        base_url = line.split(" on ", 1)[1].split()[0]
        response = httpx.get(base_url + "/models", headers={"Authorization": "Bearer offline-kimi-key"}, timeout=5)
        assert response.status_code == 200 and response.json()["data"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_command_on_a_busy_port_fails_with_one_line_naming_the_port_and_variable():
    """`make run` must stop, not start the app against whatever already owns the port (issue 16, item 18)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "KIMI_API_KEY": ""}
        result = subprocess.run(
            [sys.executable, "manage.py", "offlinekimi", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "OFFLINE_KIMI_PORT" in lines[0]
    assert "Traceback" not in result.stderr


# --- connections kept, as the real API keeps them ------------------------------------------------------------------


async def test_answers_written_whole_leave_the_connection_for_the_next_request(offline_kimi):
    """A streamed answer, a whole one and a models list: one connection, as against the real API (a client that
    read to the end reuses it); the third answer's body is as it would be on a new connection."""
    headers = {"Authorization": f"Bearer {offline_kimi.api_key}"}
    async with httpx.AsyncClient(base_url=offline_kimi.base_url, headers=headers) as client:
        async with client.stream("POST", "/chat/completions", json=chat("one [[tokens:5]]")) as response:
            streamed = b"".join([chunk async for chunk in response.aiter_bytes()])
        whole = await client.post("/chat/completions", json={**chat("two [[tokens:3]]"), "stream": False})
        models = await client.get("/models")
    assert streamed.rstrip().endswith(b"data: [DONE]") and whole.status_code == 200 and models.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == offline_kimi.log.chat_requests[-1].sent_text
    assert {record.connection for record in offline_kimi.log.records} == {1}


async def test_a_response_cut_off_ends_its_connection_and_the_next_request_gets_a_new_one(offline_kimi):
    headers = {"Authorization": f"Bearer {offline_kimi.api_key}"}
    async with httpx.AsyncClient(base_url=offline_kimi.base_url, headers=headers) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=chat("x [[fault:drop_midstream]]")) as cut:
                async for _ in cut.aiter_bytes():
                    pass
        after = await client.post("/chat/completions", json={**chat("fine [[tokens:2]]"), "stream": False})
        again = await client.get("/models")
    assert after.status_code == 200 and again.status_code == 200
    assert [record.connection for record in offline_kimi.log.records] == [1, 2, 2]


async def test_a_request_that_says_close_is_answered_and_its_connection_closed(offline_kimi):
    head, chunks = await raw_post(offline_kimi, "/chat/completions", chat("bye [[tokens:2]]"))  # Connection: close
    assert head.startswith(b"HTTP/1.1 200") and chunks[-1] == b""  # answered whole, then EOF (else: a hang)


async def test_the_next_request_on_a_kept_connection_is_read_whole(offline_kimi):
    """Two requests written one after the other on a bare socket, the second as soon as the first answer ends: the
    server's watch for the client leaving may have read the second's first byte; the request is read whole."""
    reader, writer = await open_raw(offline_kimi)
    try:
        writer.write(raw_request(offline_kimi, "/models"))
        head = await reader.readuntil(b"\r\n\r\n")
        length = content_length(head)
        first = json.loads(await reader.readexactly(length))
        writer.write(raw_request(offline_kimi, "/models", headers={"Connection": "close"}))
        rest = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert first["object"] == "list"
    assert rest.startswith(b"HTTP/1.1 200") and json.loads(rest.partition(b"\r\n\r\n")[2]) == first
    assert [record.connection for record in offline_kimi.log.records] == [1, 1]


async def test_a_client_that_resets_its_idle_connection_leaves_the_answer_it_read_complete(offline_kimi):
    """A pool that drops a kept connection with a reset (SO_LINGER 0) after reading an answer whole: the answer's
    record stays complete, not disconnected (the reset reaches the server while it waits for the next request)."""
    reader, writer = await open_raw(offline_kimi)
    writer.write(raw_request(offline_kimi, "/chat/completions", {**chat("whole [[tokens:3]]"), "stream": False}))
    head = await reader.readuntil(b"\r\n\r\n")
    length = content_length(head)
    assert json.loads(await reader.readexactly(length))["choices"][0]["finish_reason"] == "stop"
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    await asyncio.sleep(0.3)  # the server sees the reset
    (record,) = offline_kimi.log.chat_requests
    assert record.completed and not record.disconnected
