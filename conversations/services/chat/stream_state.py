"""Where an answer in progress lives while it streams: its text so far and the seq of its last frame.

The channel layer alone can drop messages and only reaches sockets that were listening at the time, so a socket
of another worker that subscribes late reads a snapshot from here and then takes only the deltas with a higher seq.
The relay writes a frame here *before* it sends it through the layer, and a subscriber joins the group *before* it
reads the snapshot, which together give "no gap, no duplicate". (Sockets of the answer's own process take their
snapshot from the relay itself, which holds exactly what its frames carried: ``relay.py``.)

Two stores behind one interface: in process memory (the embedded default: one daphne process) and Redis (when
``REDIS_URL`` is set: any worker can read any generation). Each generation also keeps a heartbeat here; the reaper
marks answers whose heartbeat stopped (their worker died) as interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

STATE_TTL = 3600  # seconds a finished or abandoned state lingers in Redis at most


def heartbeat_ttl() -> float:
    """Seconds without a heartbeat before an answer counts as orphaned (settings.KIMICHAT_HEARTBEAT_TTL)."""
    return settings.KIMICHAT_HEARTBEAT_TTL


@dataclass(frozen=True, slots=True)
class Snapshot:
    content: str
    reasoning: str
    seq: int


EMPTY = Snapshot("", "", 0)  # a new answer; a continued one starts from its stored text and seq


class MemoryStreamState:
    batched = False  # appends are cheap: made at once, in the relay's own step

    def __init__(self) -> None:
        self._content: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._seq: dict[int, int] = {}
        self._beats: dict[int, float] = {}

    async def start(self, message_id: int, start: Snapshot = EMPTY) -> None:
        self._content[message_id] = [start.content] if start.content else []
        self._reasoning[message_id] = [start.reasoning] if start.reasoning else []
        self._seq[message_id] = start.seq
        self._beats[message_id] = time.monotonic()

    def append_now(self, message_id: int, seq: int, content: str, reasoning: str) -> None:
        if message_id not in self._seq:
            return  # finished meanwhile
        if content:
            self._content[message_id].append(content)
        if reasoning:
            self._reasoning[message_id].append(reasoning)
        self._seq[message_id] = seq

    async def append_many(self, frames: list[tuple[int, int, str, str]]) -> None:
        for frame in frames:
            self.append_now(*frame)

    async def snapshot(self, message_id: int) -> Snapshot | None:
        if message_id not in self._seq:
            return None
        content = "".join(self._content[message_id])
        reasoning = "".join(self._reasoning[message_id])
        # Joined once, kept joined: later snapshots and appends start from one string.
        self._content[message_id] = [content] if content else []
        self._reasoning[message_id] = [reasoning] if reasoning else []
        return Snapshot(content, reasoning, self._seq[message_id])

    async def heartbeat(self, message_ids: list[int]) -> None:
        now = time.monotonic()
        for message_id in message_ids:
            self._beats[message_id] = now

    async def alive(self, message_id: int) -> bool:
        beat = self._beats.get(message_id)
        return beat is not None and time.monotonic() - beat < heartbeat_ttl()

    async def finish(self, message_id: int) -> None:
        for store in (self._content, self._reasoning, self._seq, self._beats):
            store.pop(message_id, None)

    async def close(self) -> None:
        return None


class RedisStreamState:
    """Three keys per answer: content and reasoning (APPENDed strings), and a hash with the seq.

    Appends and the seq move together in one MULTI, so a snapshot never sees text without its seq or the reverse.
    The relay writes the frames of all its answers in one such pipeline per round (``append_many``): one round trip
    however many answers are running.
    """

    batched = True

    def __init__(self, url: str, max_connections: int = 10_000) -> None:
        import redis.asyncio as redis_asyncio

        self._url = url
        self._max_connections = max_connections
        self._redis_module = redis_asyncio
        self._clients: dict[int, object] = {}  # one client per event loop: redis.asyncio binds to its loop

    @property
    def _redis(self):
        import asyncio

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            # The pool's limit as the other Redis clients' (kimichat/redis_options.py): redis-py 8 raises past 100.
            client = self._redis_module.Redis.from_url(self._url, max_connections=self._max_connections)
            self._clients[loop_id] = client
        return client

    @staticmethod
    def _keys(message_id: int) -> tuple[str, str, str, str]:
        base = f"kimichat:gen:{message_id}"
        return f"{base}:content", f"{base}:reasoning", f"{base}:seq", f"{base}:alive"

    async def start(self, message_id: int, start: Snapshot = EMPTY) -> None:
        content, reasoning, seq, alive = self._keys(message_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(content, start.content.encode(), ex=STATE_TTL)
            pipe.set(reasoning, start.reasoning.encode(), ex=STATE_TTL)
            pipe.set(seq, start.seq, ex=STATE_TTL)
            pipe.set(alive, 1, px=int(heartbeat_ttl() * 1000))
            await pipe.execute()

    async def append_many(self, frames: list[tuple[int, int, str, str]]) -> None:
        """Frames (message id, seq, content, reasoning) of any answers, in order, in one transaction: per answer one
        APPEND of its frames' text joined and one SET of its last seq, however many of its frames the round holds."""
        answers: dict[int, tuple[list[str], list[str], list[int]]] = {}
        for message_id, seq, content, reasoning in frames:
            texts, thoughts, last = answers.setdefault(message_id, ([], [], [0]))
            texts.append(content)
            thoughts.append(reasoning)
            last[0] = seq
        async with self._redis.pipeline(transaction=True) as pipe:
            for message_id, (texts, thoughts, last) in answers.items():
                content_key, reasoning_key, seq_key, _ = self._keys(message_id)
                if content := "".join(texts):
                    pipe.append(content_key, content.encode())
                if reasoning := "".join(thoughts):
                    pipe.append(reasoning_key, reasoning.encode())
                pipe.set(seq_key, last[0], ex=STATE_TTL)
            await pipe.execute()

    async def snapshot(self, message_id: int) -> Snapshot | None:
        content_key, reasoning_key, seq_key, _ = self._keys(message_id)
        content, reasoning, seq = await self._redis.mget(content_key, reasoning_key, seq_key)
        if seq is None:
            return None
        return Snapshot((content or b"").decode(), (reasoning or b"").decode(), int(seq))

    async def heartbeat(self, message_ids: list[int]) -> None:
        if not message_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.set(self._keys(message_id)[3], 1, px=int(heartbeat_ttl() * 1000))
            await pipe.execute()

    async def alive(self, message_id: int) -> bool:
        return bool(await self._redis.exists(self._keys(message_id)[3]))

    async def finish(self, message_id: int) -> None:
        await self._redis.delete(*self._keys(message_id))

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


_store: MemoryStreamState | RedisStreamState | None = None


def get_stream_state() -> MemoryStreamState | RedisStreamState:
    global _store
    if _store is None:
        _store = (
            RedisStreamState(settings.REDIS_URL, settings.REDIS_MAX_CONNECTIONS)
            if settings.REDIS_URL
            else MemoryStreamState()
        )
    return _store


def reset_stream_state() -> None:
    """Forget the store (tests that switch settings)."""
    global _store
    _store = None
