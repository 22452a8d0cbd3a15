"""The hot path: the pieces of the answers this process writes, on their way to the sockets that show them.

Per answer a ``Relay`` keeps the text (sent and not yet sent) and numbers its frames (``seq``). One ``Relayer`` per
event loop (owned by the generation registry) sends them:

- **To this process's sockets, directly.** A socket that follows a conversation registers here (``follow``) and is
  handed each frame as a call: no channel-layer queue, no task per frame, and a delta's JSON is encoded once for all
  the sockets that show it. Every event of a running answer (its messages, deltas, error and ``done``) takes this
  path, so a socket sees them in the order they happened.
- **Coalesced adaptively.** An answer's first piece goes out at once, and so does every piece while the event loop
  keeps up (at most one frame per ``COALESCE_MS`` per answer). When the loop falls behind (its lag, sampled every
  25 ms, passes ``LOADED_LAG``), the window follows the lag, up to ``COALESCE_MAX_MS``, and waiting pieces go out
  on one shared tick: a frame then carries several pieces, so a loaded process pays its per-frame costs (JSON,
  websocket framing, a write per socket) per window rather than per token, and sheds work exactly when it has
  too much.
- **To the stream state and other workers, in batches.** The stream state (Redis when set) gets every frame's text in
  one pipeline per round for all answers, before any other worker can see the frame; a frame goes through the channel
  layer only for an answer that a socket of another worker follows (``Relay.remote``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from django.conf import settings

from conversations.services.chat.stream_state import EMPTY, Snapshot

logger = logging.getLogger(__name__)

LAG_SAMPLE_SECONDS = 0.025
LOADED_LAG = 0.004  # seconds of event-loop lag (smoothed) from which pieces are batched
LAG_TO_WINDOW = 4  # under load, the coalescing window is this many times the lag (within its bounds)


def conversation_group(conversation_id: int) -> str:
    return f"conv.{conversation_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def control_group(conversation_id: int) -> str:
    return f"genctl.{conversation_id}"


class Relay:
    """One answer's text on its way out."""

    __slots__ = (
        "conversation_id",
        "group",
        "message_id",
        "content",
        "reasoning",
        "pending_content",
        "pending_reasoning",
        "seq",
        "last_flush",
        "dirty",
        "remote",
        "checkpointed_seq",
        "first_seq",
    )

    def __init__(self, conversation_id: int, message_id: int, start: Snapshot = EMPTY) -> None:
        self.conversation_id = conversation_id
        self.group = conversation_group(conversation_id)
        self.message_id = message_id
        # A continued answer goes on from its stored text and seq, so every socket's seq check holds across parts.
        self.content: list[str] = [start.content] if start.content else []  # sent: in frames up to ``seq``
        self.reasoning: list[str] = [start.reasoning] if start.reasoning else []
        self.pending_content: list[str] = []  # received, waiting for the next frame
        self.pending_reasoning: list[str] = []
        self.seq = self.first_seq = self.checkpointed_seq = start.seq
        self.last_flush = 0.0
        self.dirty = False  # waiting for the shared tick
        self.remote = False  # a socket of another worker follows this conversation

    def add(self, piece: str, thought: str) -> None:
        if piece:
            self.pending_content.append(piece)
        if thought:
            self.pending_reasoning.append(thought)

    def take(self) -> dict | None:
        """The next delta event (``chat.delta``), made of everything pending; None if nothing is."""
        if not self.pending_content and not self.pending_reasoning:
            return None
        piece, thought = "".join(self.pending_content), "".join(self.pending_reasoning)
        self.pending_content.clear()
        self.pending_reasoning.clear()
        if piece:
            self.content.append(piece)
        if thought:
            self.reasoning.append(thought)
        self.seq += 1
        self.last_flush = time.monotonic()
        return {
            "type": "chat.delta",
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "content": piece,
            "reasoning": thought,
        }

    def snapshot(self) -> Snapshot:
        """What the frames up to ``seq`` carried, joined (and kept joined: later snapshots start from one string)."""
        content, reasoning = "".join(self.content), "".join(self.reasoning)
        self.content[:] = [content] if content else []
        self.reasoning[:] = [reasoning] if reasoning else []
        return Snapshot(content, reasoning, self.seq)

    def text(self) -> str:
        return "".join(self.content) + "".join(self.pending_content)

    def thought(self) -> str:
        return "".join(self.reasoning) + "".join(self.pending_reasoning)


class Relayer:
    """Sends the frames of this event loop's answers (see the module's docstring)."""

    def __init__(self, layer, state, origin: str) -> None:
        self.layer = layer
        self.state = state
        self.origin = origin  # marks this process's frames in the channel layer, so its own sockets skip them
        self.relays: dict[int, Relay] = {}  # by message id
        self.local: dict[str, set] = {}  # group name (conv.<id>, user.<id>) -> this process's sockets in it
        self.lag = 0.0  # smoothed event-loop lag, seconds
        # Read once: settings are a lazy object, and these are read for every piece.
        self.base_window = settings.KIMICHAT_COALESCE_MS / 1000
        self.max_window = max(self.base_window, settings.KIMICHAT_COALESCE_MAX_MS / 1000)
        self._dirty: dict[int, Relay] = {}
        self._wake = asyncio.Event()
        self._outbox: list[tuple[Relay, dict]] = []  # frames for the stream state (Redis) and other workers
        self._writer: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []

    # Sockets.
    def follow(self, group: str, subscriber) -> None:
        self.local.setdefault(group, set()).add(subscriber)

    def unfollow(self, group: str, subscriber) -> None:
        subscribers = self.local.get(group)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.local[group]

    async def deliver(self, group: str, event: dict) -> None:
        """Hand an event to this process's sockets in the group."""
        subscribers = self.local.get(group)
        if not subscribers:
            return
        frame = orjson.dumps({**event, "type": "delta"}).decode() if event["type"] == "chat.delta" else None
        for subscriber in tuple(subscribers):
            try:
                await subscriber.deliver(group, event, frame)
            except Exception:  # noqa: BLE001 - one broken socket must not stop an answer or its other sockets
                logger.warning("a socket failed to take a %s frame", event["type"], exc_info=True)

    async def publish(self, relay: Relay, event: dict) -> None:
        """A non-delta event of a running answer (message, error, done): after its frames, to the same sockets."""
        await self.deliver(relay.group, event)
        if relay.remote:
            await self.drain()  # the other workers' sockets get the answer's last deltas first
            await self.layer.group_send(relay.group, {**event, "origin": self.origin})

    # Answers.
    def open(self, conversation_id: int, message_id: int, start: Snapshot = EMPTY) -> Relay:
        relay = Relay(conversation_id, message_id, start)
        self.relays[message_id] = relay
        return relay

    def snapshot(self, message_id: int) -> Snapshot | None:
        """A running answer of this process, as its sockets have seen it so far."""
        relay = self.relays.get(message_id)
        return relay.snapshot() if relay is not None else None

    async def add(self, relay: Relay, piece: str, thought: str) -> None:
        if not piece and not thought:
            return
        relay.add(piece, thought)
        # At once: an answer's first piece (how soon it starts is what a person notices most), and a piece after a
        # quiet spell of at least the window, which under load is longer (``window``).
        if relay.seq == relay.first_seq or time.monotonic() - relay.last_flush >= self.window():
            await self.flush(relay)
        elif not relay.dirty:
            relay.dirty = True
            self._dirty[relay.message_id] = relay
            self._wake.set()

    async def flush(self, relay: Relay) -> None:
        relay.dirty = False
        event = relay.take()
        if event is None:
            return
        await self.deliver(relay.group, event)
        if self.state.batched or relay.remote:
            self._outbox.append((relay, event))
            if self._writer is None or self._writer.done():
                self._writer = asyncio.ensure_future(self._write_out())
        else:
            self.state.append_now(relay.message_id, event["seq"], event["content"], event["reasoning"])

    async def close(self, relay: Relay) -> None:
        """The answer ended: its last piece goes out, and reaches the stream state and other workers."""
        self._dirty.pop(relay.message_id, None)
        await self.flush(relay)
        await self.drain()

    def forget(self, relay: Relay) -> None:
        if self.relays.get(relay.message_id) is relay:  # not a later relay of the same (continued) message
            del self.relays[relay.message_id]
            self._dirty.pop(relay.message_id, None)

    async def drain(self) -> None:
        """Wait until every frame so far is in the stream state and, where followed, sent to other workers."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_out(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            if self.state.batched:
                try:
                    await self.state.append_many(
                        [(r.message_id, e["seq"], e["content"], e["reasoning"]) for r, e in batch]
                    )
                except Exception:  # noqa: BLE001 - the text is in memory: sockets here go on; others resync later
                    logger.warning("writing %d frames to the stream state failed", len(batch), exc_info=True)
            else:
                for relay, event in batch:
                    self.state.append_now(relay.message_id, event["seq"], event["content"], event["reasoning"])
            for relay, event in batch:
                if relay.remote:
                    try:
                        await self.layer.group_send(relay.group, {**event, "origin": self.origin})
                    except Exception:  # noqa: BLE001 - a missed frame shows as a seq gap there and is resynced
                        logger.warning("a frame of answer %s did not reach other workers", relay.message_id)

    # Coalescing.
    def window(self) -> float:
        """How long a piece may wait for company: the base window, stretched by the loop's lag under load."""
        if self.lag < LOADED_LAG:
            return self.base_window
        return min(self.max_window, max(self.base_window, self.lag * LAG_TO_WINDOW))

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._tick(), name="kimichat-relay-tick"),
                asyncio.create_task(self._measure_lag(), name="kimichat-relay-lag"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _tick(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.window())
            dirty, self._dirty = self._dirty, {}
            for relay in dirty.values():
                if relay.dirty:
                    try:
                        await self.flush(relay)
                    except Exception:  # noqa: BLE001 - the tick serves every answer: one failure must not end it
                        logger.exception("flushing answer %s failed", relay.message_id)

    async def _measure_lag(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            late = max(0.0, time.monotonic() - start - LAG_SAMPLE_SECONDS)
            self.lag = 0.7 * self.lag + 0.3 * late
