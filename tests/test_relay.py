"""The relay's hot path (conversations/services/chat/relay.py): direct delivery, adaptive coalescing, batched
state writes.

The unit tests drive a ``Relayer`` with sockets and a stream state of their own (the seam: what a socket does with a
frame is the consumer's business, tested through the real websocket in test_ws_chat.py and below).
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from conversations.services.chat import relay as relay_module
from conversations.services.chat.relay import Relayer
from conversations.services.chat.stream_state import MemoryStreamState


class Socket:
    def __init__(self, fail: bool = False) -> None:
        self.frames: list[tuple[str, dict, str | None]] = []
        self.fail = fail

    async def deliver(self, group, event, frame):
        if self.fail:
            raise ConnectionError("this socket is broken")
        self.frames.append((group, event, frame))

    def deltas(self) -> list[dict]:
        return [orjson.loads(frame) for _group, event, frame in self.frames if event["type"] == "chat.delta"]


class Layer:
    """Records what would go to other workers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def group_send(self, group, event):
        self.sent.append((group, event))


class BatchedState(MemoryStreamState):
    """The Redis store's shape (batched writes), in memory, counting its round trips."""

    batched = True

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[list[tuple]] = []

    async def append_many(self, frames):
        self.rounds.append(list(frames))
        await asyncio.sleep(0.01)  # a round trip
        await super().append_many(frames)


@pytest.fixture
def coalescing(settings):
    settings.KIMICHAT_COALESCE_MS = 20
    settings.KIMICHAT_COALESCE_MAX_MS = 150
    return settings


async def open_relayer(state=None, layer=None) -> Relayer:
    relayer = Relayer(layer or Layer(), state or MemoryStreamState(), origin="this-process")
    relayer.start()
    return relayer


async def test_every_socket_gets_each_delta_once_encoded(coalescing):
    relayer = await open_relayer()
    one, two, elsewhere = Socket(), Socket(), Socket()
    relayer.follow("conv.1", one)
    relayer.follow("conv.1", two)
    relayer.follow("conv.2", elsewhere)
    await relayer.state.start(10)
    relay = relayer.open(1, 10)
    await relayer.add(relay, "Hello", "")
    assert (
        one.deltas()
        == two.deltas()
        == [{"type": "delta", "message_id": 10, "conversation_id": 1, "seq": 1, "content": "Hello", "reasoning": ""}]
    )
    assert one.frames[0][2] is two.frames[0][2]  # one JSON string for all the sockets
    assert elsewhere.frames == []
    await relayer.stop()


async def test_a_broken_socket_does_not_stop_the_others(coalescing):
    relayer = await open_relayer()
    broken, fine = Socket(fail=True), Socket()
    relayer.follow("conv.1", broken)
    relayer.follow("conv.1", fine)
    await relayer.state.start(10)
    relay = relayer.open(1, 10)
    await relayer.add(relay, "a", "")
    await relayer.close(relay)
    assert [d["content"] for d in fine.deltas()] == ["a"]
    await relayer.stop()


async def test_idle_pieces_go_at_once_and_fast_ones_share_a_frame(coalescing):
    relayer = await open_relayer()
    socket = Socket()
    relayer.follow("conv.1", socket)
    await relayer.state.start(10)
    relay = relayer.open(1, 10)
    for piece in "abcde":
        await relayer.add(relay, piece, "")  # faster than the 20 ms window
    assert [d["content"] for d in socket.deltas()] == ["a"]  # the first at once, the rest wait for the window
    await asyncio.sleep(0.1)
    assert [d["content"] for d in socket.deltas()] == ["a", "bcde"]
    await asyncio.sleep(0.03)  # a quiet spell longer than the window: the next piece goes at once
    await relayer.add(relay, "f", "")
    assert [d["seq"] for d in socket.deltas()] == [1, 2, 3]
    await relayer.stop()


async def test_under_load_the_window_stretches_with_the_lag(coalescing):
    relayer = await open_relayer()
    relayer.lag = 0.0
    assert relayer.window() == pytest.approx(0.020)
    relayer.lag = 0.020  # the loop is late by 20 ms a sample: 4 × 20 ms
    assert relayer.window() == pytest.approx(0.080)
    relayer.lag = 0.5
    assert relayer.window() == pytest.approx(0.150)  # never beyond COALESCE_MAX_MS
    await relayer.stop()
    coalescing.KIMICHAT_COALESCE_MAX_MS = 0
    relayer = await open_relayer()
    relayer.lag = 0.5
    assert relayer.window() == pytest.approx(0.020)  # 0 turns the stretching off
    await relayer.stop()


async def test_under_load_pieces_50_ms_apart_are_batched(coalescing, monkeypatch):
    """20 tokens/s (a piece every 50 ms) is slower than the idle window, so idle it is one frame per piece; a lagging
    loop stretches the window past 50 ms and frames carry several pieces."""
    relayer = await open_relayer()
    await relayer.stop()  # no lag sampling: the test sets the lag
    relayer._tasks = [asyncio.create_task(relayer._tick())]
    socket = Socket()
    relayer.follow("conv.1", socket)
    await relayer.state.start(10)
    relay = relayer.open(1, 10)
    relayer.lag = 0.030  # → a 120 ms window
    for piece in range(12):
        await relayer.add(relay, f"{piece},", "")
        await asyncio.sleep(0.05)
    await relayer.close(relay)
    deltas = socket.deltas()
    assert "".join(d["content"] for d in deltas) == "".join(f"{n}," for n in range(12))
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) <= 7, [d["content"] for d in deltas]  # 12 pieces, about two or three per frame
    await relayer.stop()


async def test_a_snapshot_holds_what_the_frames_carried_not_what_waits(coalescing):
    relayer = await open_relayer()
    await relayer.state.start(10)
    relay = relayer.open(1, 10)
    await relayer.add(relay, "sent ", "")
    await relayer.add(relay, "waiting", "")  # within the window: pending
    snapshot = relayer.snapshot(10)
    assert (snapshot.content, snapshot.seq) == ("sent ", 1)
    assert relay.text() == "sent waiting"  # the final store takes everything
    await relayer.close(relay)
    assert relayer.snapshot(10).content == "sent waiting"
    relayer.forget(relay)
    assert relayer.snapshot(10) is None
    await relayer.stop()


async def test_batched_state_gets_all_answers_in_few_round_trips(coalescing):
    state, layer = BatchedState(), Layer()
    relayer = await open_relayer(state, layer)
    relays = []
    for n in range(20):
        await state.start(100 + n)
        relays.append(relayer.open(n, 100 + n))
    relays[3].remote = True  # followed by a socket of another worker
    for relay in relays:
        await relayer.add(relay, f"piece of {relay.message_id}", "")
    await relayer.drain()
    assert sum(len(batch) for batch in state.rounds) == 20
    assert len(state.rounds) <= 3  # one in flight, the rest together
    for relay in relays:
        snapshot = await state.snapshot(relay.message_id)
        assert (snapshot.content, snapshot.seq) == (f"piece of {relay.message_id}", 1)
    # Only the followed answer went through the layer, marked as this process's.
    assert [(group, event["seq"], event["origin"]) for group, event in layer.sent] == [("conv.3", 1, "this-process")]
    await relayer.stop()


async def test_a_followed_answer_sends_its_last_deltas_elsewhere_before_done(coalescing):
    state, layer = BatchedState(), Layer()
    relayer = await open_relayer(state, layer)
    await state.start(10)
    relay = relayer.open(1, 10)
    relay.remote = True
    await relayer.add(relay, "a", "")
    await relayer.add(relay, "b", "")
    await relayer.close(relay)
    await relayer.publish(relay, {"type": "chat.done", "message_id": 10, "conversation_id": 1})
    assert [event["type"] for _group, event in layer.sent] == ["chat.delta", "chat.delta", "chat.done"]
    await relayer.stop()


async def test_the_lag_sample_rises_when_the_loop_is_blocked(coalescing, monkeypatch):
    monkeypatch.setattr(relay_module, "LAG_SAMPLE_SECONDS", 0.01)
    relayer = await open_relayer()
    await asyncio.sleep(0.05)
    quiet = relayer.lag
    for _ in range(5):
        time.sleep(0.03)  # noqa: ASYNC251 - the point: a loop busy with work that does not yield
        await asyncio.sleep(0)
        await asyncio.sleep(0.011)
    assert relayer.lag > max(quiet, relay_module.LOADED_LAG), (quiet, relayer.lag)
    await relayer.stop()


async def test_redis_state_takes_a_round_of_frames_in_one_transaction():
    """The Redis store joins a round's frames per answer (one APPEND, one SET of the last seq each)."""
    import os

    import redis

    from conversations.services.chat.stream_state import RedisStreamState, Snapshot

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    state = RedisStreamState(url)
    one, two = 900_000_001, 900_000_002
    await state.start(one)
    await state.start(two)
    await state.append_many([(one, 1, "a", ""), (two, 1, "x", "r"), (one, 2, "b", "t"), (one, 3, "c", "")])
    await state.append_many([(two, 2, "y", "")])
    assert await state.snapshot(one) == Snapshot("abc", "t", 3)
    assert await state.snapshot(two) == Snapshot("xy", "r", 2)
    await state.finish(one)
    await state.finish(two)
    assert await state.snapshot(one) is None
    await state.close()
