"""A benchmark client process: many streams on one asyncio loop, driven by bench/harness.py over stdin/stdout.

Protocol: the harness writes one JSON job line; the client opens every connection (relay mode: a websocket with the
stream's session cookie; floor and api modes: nothing yet), prints ``ready``, waits for a ``go <t0 ns>`` line, starts
each stream at ``t0 + start`` and prints one JSON result line when all have ended. Times are ``time.monotonic_ns()``,
the clock the offline server stamps pieces with. ``"receive_times": true`` adds each piece's receive time (to cut a
run into windows); mode ``ping`` sends a ``ping`` frame every ``interval`` seconds for ``duration`` seconds on one
socket and reports each round trip (the server's event loop answers it: its lag shows there); mode ``api`` streams
each answer through ``POST /v1/chat/completions`` with the stream's API key (httpx).

Kept cheap, because it shares the machine's cores with the server it measures: no websocket compression, one
``orjson.loads`` per frame, stamps and texts checked only after the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import resource
import sys
import time
import uuid

import orjson
import websockets

STAMP = re.compile(r"⟦(\d+)⟧")
STAMP_BYTES = re.compile("⟦(\\d+)⟧".encode())
CONNECT_AT_ONCE = 50


async def _relay_stream(job: dict, stream: dict, ws, t0: int, result: dict) -> None:
    await asyncio.sleep(max(0.0, (t0 + int(stream["start"] * 1e9) - time.monotonic_ns()) / 1e9))
    frame = {
        "type": "send",
        "conversation_id": None,
        "content": job["content"].replace("{marker}", stream["marker"]),
        "client_msg_id": str(uuid.uuid4()),
        "model": job["model"],
    }
    result["send_ns"] = time.monotonic_ns()
    await ws.send(orjson.dumps(frame).decode())
    deltas = []  # (receive ns, seq, content, is a snapshot)
    answer_id = None
    async for raw in ws:
        now = time.monotonic_ns()
        data = orjson.loads(raw)
        kind = data.get("type")
        if kind == "delta":
            deltas.append((now, data["seq"], data["content"], False))
        elif kind == "message":
            message = data["message"]
            if answer_id is None and message["role"] == "assistant":
                answer_id = message["id"]
            if message["id"] == answer_id and message["seq"]:
                # A snapshot: the server saw this socket miss a frame and sent the answer so far (the protocol).
                deltas.append((now, message["seq"], message["content"], True))
        elif kind == "done":
            result["status"] = data["status"]
            result["final"] = data["message"]["content"]
            break
        elif kind == "error":
            result.setdefault("errors", []).append(data.get("code"))
            if data.get("message_id") is None:  # a refused send: nothing will follow
                break
    result["deltas"] = deltas


def _page_origin(ws_url: str) -> str:
    """The origin of the chat page served by the worker at ``ws_url``: sockets are accepted from it alone (scheme,
    host and port)."""
    scheme, rest = ws_url.split("://", 1)
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.split('/', 1)[0]}"


async def _run_relay(job: dict, t0_future: asyncio.Future, ready) -> list[dict]:
    limit = asyncio.Semaphore(CONNECT_AT_ONCE)
    sockets: list = [None] * len(job["streams"])

    async def connect(index: int, stream: dict) -> None:
        async with limit:
            url = stream.get("url") or job["url"]
            sockets[index] = await websockets.connect(
                url,
                origin=_page_origin(url),
                additional_headers={"Cookie": f"sessionid={stream['key']}"},
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=60,
            )

    await asyncio.gather(*(connect(i, s) for i, s in enumerate(job["streams"])))
    ready()
    t0 = await t0_future
    results = [{"marker": s["marker"]} for s in job["streams"]]
    try:
        await _all(
            job,
            results,
            (_relay_stream(job, s, ws, t0, r) for s, ws, r in zip(job["streams"], sockets, results, strict=True)),
        )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets if ws is not None), return_exceptions=True)
    return [_summarize_relay(r, job.get("receive_times", False)) for r in results]


async def _all(job: dict, results: list[dict], streams) -> None:
    """Run every stream; the ones still open at the job's timeout end as ``timeout``."""
    try:
        await asyncio.wait_for(asyncio.gather(*streams), timeout=job["timeout"])
    except TimeoutError:
        for result in results:
            result.setdefault("status", "timeout")


def _summarize_relay(result: dict, keep_times: bool = False) -> dict:
    """Latency per piece, and the checks: seq continuity, text order, the `done` text equal to the deltas."""
    deltas = result.pop("deltas", [])
    latencies, joined, seq_gaps, snapshots, last_seq, frame_times, received = [], "", 0, 0, 0, [], []
    for now, seq, content, snapshot in deltas:
        if seq <= last_seq:
            continue  # already in a snapshot this socket had
        frame_times.append(now)
        if snapshot:
            snapshots += 1
            fresh = content[len(joined) :] if content.startswith(joined) else content
            joined = content
        else:
            if seq != last_seq + 1:
                seq_gaps += 1  # a frame missed; the server follows with a snapshot
            fresh = content
            joined += content
        last_seq = seq
        stamps = STAMP.findall(fresh)
        latencies += [now - int(ns) for ns in stamps]
        received += [now] * len(stamps)
    sent = [int(ns) for ns in STAMP.findall(joined)]
    return {
        **result,
        "frames": len(frame_times),
        "pieces": len(latencies),
        "latencies_ns": latencies,
        **({"received_ns": received} if keep_times else {}),
        "seq_gaps": seq_gaps,
        "snapshots": snapshots,
        "stamps_out_of_order": sum(1 for a, b in zip(sent, sent[1:], strict=False) if b <= a),
        "text_sha256": hashlib.sha256(joined.encode()).hexdigest(),
        "final_matches": result.get("final") is not None and result.pop("final") == joined,
        "first_ns": frame_times[0] if frame_times else None,
        "last_ns": frame_times[-1] if frame_times else None,
    }


async def _floor_stream(job: dict, stream: dict, t0: int, result: dict) -> None:
    """The same answer read straight from the offline server over HTTP: the floor no relay can beat."""
    await asyncio.sleep(max(0.0, (t0 + int(stream["start"] * 1e9) - time.monotonic_ns()) / 1e9))
    body = orjson.dumps(
        {
            "model": job["model"],
            "stream": True,
            "messages": [{"role": "user", "content": job["content"].replace("{marker}", stream["marker"])}],
        }
    )
    host, port = job["upstream"]
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {job['api_key']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    result["send_ns"] = time.monotonic_ns()
    writer.write(head.encode() + body)
    latencies, tail, now, first = [], b"", 0, None
    while chunk := await reader.read(65536):
        now = time.monotonic_ns()
        buffer = tail + chunk
        end = 0
        for match in STAMP_BYTES.finditer(buffer):
            first = first or now
            latencies.append(now - int(match.group(1)))
            end = match.end()
        tail = buffer[end:][-64:]
    writer.close()
    result.update(status="complete", pieces=len(latencies), latencies_ns=latencies, first_ns=first, last_ns=now or None)


async def _run_floor(job: dict, t0_future: asyncio.Future, ready) -> list[dict]:
    ready()
    t0 = await t0_future
    results = [{"marker": s["marker"]} for s in job["streams"]]
    await _all(job, results, (_floor_stream(job, s, t0, r) for s, r in zip(job["streams"], results, strict=True)))
    return results


async def _api_stream(job: dict, stream: dict, client, t0: int, result: dict) -> None:
    """One answer through KimiChat's own ``POST /v1/chat/completions`` (streaming), with the stream's API key."""
    await asyncio.sleep(max(0.0, (t0 + int(stream["start"] * 1e9) - time.monotonic_ns()) / 1e9))
    body = {
        "model": job["model"],
        "stream": True,
        "messages": [{"role": "user", "content": job["content"].replace("{marker}", stream["marker"])}],
    }
    deltas = []  # (receive ns, content)
    finished = False
    result["send_ns"] = time.monotonic_ns()
    async with client.stream(
        "POST", stream["url"], content=orjson.dumps(body), headers={"Authorization": f"Bearer {stream['key']}"}
    ) as response:
        if response.status_code != 200:
            await response.aread()
            result["status"] = f"http {response.status_code}"
            result["errors"] = [orjson.loads(response.content).get("error", {}).get("code", "?")]
            return
        async for line in response.aiter_lines():
            now = time.monotonic_ns()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                finished = True
                break
            data = orjson.loads(line[6:])
            if "error" in data:
                result.setdefault("errors", []).append(data["error"].get("code"))
                continue
            for choice in data.get("choices", []):
                if content := choice.get("delta", {}).get("content"):
                    deltas.append((now, content))
    joined = "".join(content for _, content in deltas)
    result["status"] = "complete" if finished and not result.get("errors") else "incomplete"
    result["final"] = joined  # no closing message in this API: [DONE] after the last delta is its check
    result["deltas"] = [(now, index + 1, content, False) for index, (now, content) in enumerate(deltas)]


async def _run_api(job: dict, t0_future: asyncio.Future, ready) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:
        ready()
        t0 = await t0_future
        results = [{"marker": s["marker"]} for s in job["streams"]]
        streams = (_api_stream(job, s, client, t0, r) for s, r in zip(job["streams"], results, strict=True))
        await _all(job, results, streams)
    return [_summarize_relay(r) for r in results]


async def _run_ping(job: dict, t0_future: asyncio.Future, ready) -> list[dict]:
    stream = job["streams"][0]
    url = stream.get("url") or job["url"]
    ws = await websockets.connect(
        url,
        origin=_page_origin(url),
        additional_headers={"Cookie": f"sessionid={stream['key']}"},
        compression=None,
        ping_interval=None,
        open_timeout=60,
    )
    ready()
    t0 = await t0_future
    rounds = []  # (sent ns, round trip ns)
    frame = orjson.dumps({"type": "ping"}).decode()
    try:
        tick = t0
        while tick < t0 + int(job["duration"] * 1e9):
            await asyncio.sleep(max(0.0, (tick - time.monotonic_ns()) / 1e9))
            sent = time.monotonic_ns()
            await ws.send(frame)
            while orjson.loads(await ws.recv()).get("type") != "pong":
                pass
            rounds.append((sent, time.monotonic_ns() - sent))
            # A slow answer is not followed by a burst: the next ping goes at the next tick still ahead.
            tick += int(job["interval"] * 1e9) * max(1, -(-(time.monotonic_ns() - tick) // int(job["interval"] * 1e9)))
    finally:
        await ws.close()
    return [{"marker": stream["marker"], "status": "complete", "rounds": rounds}]


async def main() -> None:
    loop = asyncio.get_running_loop()
    job = orjson.loads(await loop.run_in_executor(None, sys.stdin.readline))
    t0_future: asyncio.Future = loop.create_future()

    def ready() -> None:
        print("ready", flush=True)
        loop.run_in_executor(None, _wait_go, loop, t0_future)

    runner = {"floor": _run_floor, "ping": _run_ping, "api": _run_api}.get(job["mode"], _run_relay)
    results = await runner(job, t0_future, ready)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"results": results, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()


def _wait_go(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
    line = sys.stdin.readline().split()
    t0 = int(line[1]) if len(line) == 2 and line[0] == "go" else time.monotonic_ns()
    loop.call_soon_threadsafe(future.set_result, t0)


if __name__ == "__main__":
    asyncio.run(main())
