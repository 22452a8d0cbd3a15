"""Answers: accepted, stored, run and relayed by a service that owns them, not by the socket that asked.

Layered as check → do → notify:

- ``prepare_*`` (synchronous, one transaction) validates a send, regenerate or edit, stores the user message and an
  assistant placeholder in status ``streaming`` and reserves its credits; a refusal raises ``SendRefused`` and
  stores nothing.
- ``GenerationRegistry.launch`` runs the upstream stream in a task of its own. Its pieces go out through the relay
  (``relay.py``: straight to this process's sockets, through the stream state and the channel layer to other
  workers'); the database is written only at checkpoints (every few seconds, all answers at once) and when the
  answer ends.
- ``finish_message`` stores the final answer with its status and usage and settles its credits (``finish_many``:
  the answers that end together, in one transaction).

Group names: ``conv.<id>`` reaches every socket showing a conversation, ``user.<id>`` every socket of a user,
``genctl.<conversation id>`` the worker that runs that conversation's answer (to stop it from another worker, or to
tell it that a socket there follows the conversation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from conversations.kimi import errors as kimi_errors
from conversations.kimi.client import close_client
from conversations.kimi.configured import get_client
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta, ResponseMeta, ToolCalls, Usage
from conversations.kimi.params import ChatRequest
from conversations.models import Message
from conversations.serializers import conversation_to_dict, message_to_dict
from conversations.services import batching, db_threads
from conversations.services.billing import credits, provider_balance, refills, search_fees
from conversations.services.chat import tools
from conversations.services.chat.reaper import in_progress_ids, reap_message
from conversations.services.chat.relay import Relay, Relayer, control_group, conversation_group, user_group
from conversations.services.chat.sending import Accepted, Continued
from conversations.services.chat.storing import Final, checkpoint, finish_many, save_searches, usage_estimate
from conversations.services.chat.stream_state import EMPTY, Snapshot, get_stream_state, heartbeat_ttl
from conversations.services.history import temporary as temporary_chats
from conversations.services.personal import titles

logger = logging.getLogger(__name__)


@dataclass
class Generation:
    conversation_id: int
    message_id: int
    user_id: int
    model: str
    request: ChatRequest
    reservation: credits.Reservation | None
    prompt_tokens: int
    continued: Continued | None = None
    start: Snapshot = EMPTY  # where the answer's text starts: a continued answer's stored text and seq
    task: asyncio.Task | None = None
    relay: Relay | None = None
    stop_requested: bool = False
    shutting_down: bool = False
    started: float = field(default_factory=time.monotonic)
    tools: tools.ToolLoop | None = None  # its rounds and searches (services/chat/tools.py)
    reasoning_gap: str = ""  # put before the first new reasoning piece (a continuation of an answer that thought)
    thinking_since: float | None = None  # monotonic time of the first reasoning piece
    thinking_ms: int | None = None  # from the first reasoning piece to the first answer piece ("Thought for 12 s")

    def thinking_began(self) -> None:
        if self.thinking_since is None:
            self.thinking_since = time.monotonic()

    def thinking_ended(self) -> None:
        if self.thinking_since is not None and self.thinking_ms is None:
            self.thinking_ms = round((time.monotonic() - self.thinking_since) * 1000)


@dataclass
class _Outcome:
    status: str = Message.Status.COMPLETE
    error_code: str = ""
    error_message: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    usage_estimated: bool = False  # counted here, not reported by the upstream
    request_id: str = ""

    def fail(self, status: str, code: str, message: str) -> None:
        self.status, self.error_code, self.error_message = status, code, message


class GenerationRegistry:
    """The answers running in this process (one registry per event loop). Owns their tasks."""

    def __init__(self) -> None:
        self.running: dict[int, Generation] = {}  # by conversation id
        self.layer = get_channel_layer()
        self.state = get_stream_state()
        self.origin = uuid.uuid4().hex
        self.relayer = Relayer(self.layer, self.state, self.origin)
        self.control_channel: str | None = None
        self._background: list[asyncio.Task] = []
        self.accepting = True
        self.temporary: set[int] = set()  # temporary chats that sockets of this process follow (kept alive)

    # Sockets of this process (consumers call these).
    def follow_user(self, user_id: int, subscriber) -> None:
        self.relayer.follow(user_group(user_id), subscriber)

    def unfollow_user(self, user_id: int, subscriber) -> None:
        self.relayer.unfollow(user_group(user_id), subscriber)

    async def follow(self, conversation_id: int, subscriber) -> None:
        """``subscriber`` (a socket of this process) gets every event of the conversation's answers from now on."""
        self.relayer.follow(conversation_group(conversation_id), subscriber)
        if self.multi_process:
            # An answer running on another worker sends its frames through the channel layer only once it knows a
            # socket elsewhere follows it (launch checks the group; this covers a socket that arrives later).
            await self.layer.group_send(
                control_group(conversation_id),
                {"type": "generation.follow", "conversation_id": conversation_id, "origin": self.origin},
            )

    def unfollow(self, conversation_id: int, subscriber) -> None:
        self.relayer.unfollow(conversation_group(conversation_id), subscriber)

    def keep_temporary(self, conversation_id: int) -> None:
        """A socket of this process follows this temporary chat: the heartbeat keeps it alive while any does."""
        self.temporary.add(conversation_id)

    async def _keep_temporary_chats_alive(self) -> None:
        self.temporary = {c for c in self.temporary if self.relayer.local.get(conversation_group(c))}
        if self.temporary:
            await database_sync_to_async(temporary_chats.keep_alive)(set(self.temporary))

    async def snapshot(self, message_id: int) -> Snapshot | None:
        """An answer in progress as its frames so far carried it: this process's own, else the stream state's."""
        snapshot = self.relayer.snapshot(message_id)
        return snapshot if snapshot is not None else await self.state.snapshot(message_id)

    @property
    def multi_process(self) -> bool:
        return not isinstance(self.layer, InMemoryChannelLayer)  # the in-memory layer reaches this process only

    async def _followed_elsewhere(self, conversation_id: int) -> bool:
        """Does a socket of another worker follow this conversation? Read from channels-redis's group membership
        (a sorted set of channel names; this process's names start with its client prefix). If it cannot be read,
        assume so: frames then also go through the layer, which is slower but never wrong."""
        if not self.multi_process:
            return False
        group = conversation_group(conversation_id)
        try:
            connection = self.layer.connection(self.layer.consistent_hash(group))
            members = await connection.zrange(self.layer._group_key(group), 0, -1)
            mine = f"specific.{self.layer.client_prefix}!".encode()
            return any(not member.startswith(mine) for member in members)
        except Exception:  # noqa: BLE001 - see the docstring
            logger.warning("could not read the followers of conversation %s", conversation_id, exc_info=True)
            return True

    # Background work: the control channel (stop from other workers), heartbeats and the reaper.
    async def ensure_started(self) -> None:
        if self.control_channel is not None:
            return
        # The default "specific." prefix matters: channels-redis has one receive lock per process and its holder
        # pops only its own prefix's queue, so a channel with another prefix would starve every consumer's socket.
        self.control_channel = await self.layer.new_channel()
        self._background = [
            asyncio.create_task(self._listen_control(), name="kimichat-genctl"),
            asyncio.create_task(self._heartbeat_and_reap(), name="kimichat-reaper"),
            asyncio.create_task(self._checkpoint_every_few_seconds(), name="kimichat-checkpoints"),
            asyncio.create_task(provider_balance.refresh_every_few_minutes(), name="kimichat-provider-balance"),
            asyncio.create_task(refills.refill_every_few_minutes(), name="kimichat-refills"),
        ]
        self.relayer.start()
        install_shutdown_hook(self)

    async def _listen_control(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.control_channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a lost layer connection must not end stop handling for good
                logger.exception("control channel receive failed; retrying")
                await asyncio.sleep(1)
                continue
            kind = event.get("type")
            if kind == "generation.stop":
                self.stop_local(event.get("conversation_id"))
            elif kind == "generation.follow" and event.get("origin") != self.origin:
                generation = self.running.get(event.get("conversation_id"))
                if generation is not None and generation.relay is not None:
                    generation.relay.remote = True

    async def _heartbeat_and_reap(self) -> None:
        # Beats three times per TTL, so one late beat never makes a live answer look dead.
        beat_every = heartbeat_ttl() / 3
        reap_every = settings.KIMICHAT_REAP_INTERVAL
        last_reap = 0.0
        while True:
            try:
                await self.state.heartbeat([g.message_id for g in self.running.values()])
                await self._keep_temporary_chats_alive()
                if time.monotonic() - last_reap >= reap_every:
                    last_reap = time.monotonic()
                    await self.reap()
                    await database_sync_to_async(temporary_chats.delete_abandoned)(
                        settings.KIMICHAT_TEMPORARY_CHAT_GRACE
                    )
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep beating: a failed round is retried on the next
                logger.exception("heartbeat/reaper round failed")
            await asyncio.sleep(min(beat_every, reap_every))

    async def _checkpoint_every_few_seconds(self) -> None:
        """Every CHECKPOINT_SECONDS, the text of every answer that moved, in one transaction (``checkpoint``).

        Off the delta path: every database call of the process shares one thread, and a piece must never wait
        behind a write. Best-effort: a failed round is logged; the next one, or the final store, saves the text."""
        while True:
            await asyncio.sleep(settings.KIMICHAT_CHECKPOINT_SECONDS)
            rows, relays = [], []
            for generation in list(self.running.values()):
                relay = generation.relay
                if relay is not None and relay.seq != relay.checkpointed_seq:
                    snapshot = relay.snapshot()
                    rows.append((relay.message_id, snapshot.content, snapshot.reasoning, snapshot.seq))
                    relays.append(relay)
            if not rows:
                continue
            try:
                await database_sync_to_async(checkpoint)(rows)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - see the docstring
                logger.warning("checkpoint of %d answer(s) failed; the next round will save the text", len(rows))
                continue
            for relay, row in zip(relays, rows, strict=True):
                relay.checkpointed_seq = row[3]

    async def reap(self, *, grace: float | None = None) -> int:
        """Mark answers whose worker died as interrupted, keeping their checkpointed text. Returns how many."""
        local = {g.message_id for g in self.running.values()}
        candidates = await database_sync_to_async(in_progress_ids)(heartbeat_ttl() if grace is None else grace)
        reaped = 0
        for message_id in candidates:
            if message_id in local or await self.state.alive(message_id):
                continue
            message, balance = await database_sync_to_async(reap_message)(message_id)
            if message is None:
                continue
            reaped += 1
            await self.state.finish(message_id)
            # No answer of this process: to every socket that shows it, here or elsewhere, through the layer.
            await self.layer.group_send(conversation_group(message.conversation_id), _done_event(message, balance))
        return reaped

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        if self._background:
            # Bounded: a channels-redis receive can take a while to notice its cancellation, and a worker that is
            # shutting down must not wait on it for ever.
            await asyncio.wait(self._background, timeout=2)
        self._background = []
        self.control_channel = None
        await self.relayer.stop()

    # Launch, stop, shutdown.
    async def launch(self, accepted: Accepted) -> Generation:
        """Announce the stored messages and start the answer's task."""
        await self.ensure_started()
        conversation = accepted.conversation
        generation = Generation(
            conversation_id=conversation.pk,
            message_id=accepted.assistant.pk,
            user_id=conversation.owner_id,
            model=accepted.assistant.model,
            request=accepted.request,
            reservation=accepted.reservation,
            prompt_tokens=accepted.assistant.prompt_tokens,
            continued=accepted.continued,
        )
        if accepted.continued is not None:
            answer = accepted.assistant
            generation.start = Snapshot(answer.content, answer.reasoning, answer.seq)
            generation.prompt_tokens = accepted.reservation.prompt_tokens  # the row holds the earlier part's usage
        # The state exists before the task runs, so a subscriber arriving at once finds a snapshot.
        await self.state.start(generation.message_id, generation.start)
        relay = generation.relay = self.relayer.open(conversation.pk, generation.message_id, generation.start)
        self.running[conversation.pk] = generation
        # Joined before asking who follows: a socket elsewhere that joins the group after the question is asked
        # announces itself on this control group (``follow``), so none is missed.
        await self.layer.group_add(control_group(conversation.pk), self.control_channel)
        relay.remote = await self._followed_elsewhere(conversation.pk)
        if accepted.created_conversation:
            event = {"type": "chat.conversation", "conversation": conversation_to_dict(conversation)}
            await self.relayer.deliver(user_group(conversation.owner_id), event)
            if self.multi_process:  # the user's tabs on other workers add it to their sidebar too
                await self.layer.group_send(user_group(conversation.owner_id), {**event, "origin": self.origin})
        for message in [*accepted.superseded, *([accepted.user_message] if accepted.user_message else [])]:
            await self.relayer.publish(relay, {"type": "chat.message", "message": message_to_dict(message)})
        await self.relayer.publish(relay, {"type": "chat.message", "message": message_to_dict(accepted.assistant)})
        generation.task = asyncio.create_task(self._run(generation), name=f"kimichat-answer-{generation.message_id}")
        return generation

    def stop_local(self, conversation_id) -> bool:
        generation = self.running.get(conversation_id)
        if generation is None or generation.task is None or generation.task.done():
            return False
        generation.stop_requested = True
        generation.task.cancel()
        return True

    async def stop(self, conversation_id: int) -> None:
        """Stop the answer of a conversation, on whichever worker it runs."""
        if not self.stop_local(conversation_id):
            await self.layer.group_send(
                control_group(conversation_id), {"type": "generation.stop", "conversation_id": conversation_id}
            )

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop taking answers, let running ones finish for ``grace_seconds``, then cut the rest (interrupted)."""
        self.accepting = False
        tasks = [g.task for g in self.running.values() if g.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for generation in list(self.running.values()):
                if generation.task in pending:
                    generation.shutting_down = True
                    generation.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        await self.close()

    # The answer itself.
    async def _run(self, generation: Generation) -> None:
        relay = generation.relay
        outcome = _Outcome()
        loop = generation.tools = tools.ToolLoop(generation.request, generation.prompt_tokens)
        # A continuation's new reasoning starts a paragraph of its own after the reasoning already shown.
        if generation.continued is not None and generation.continued.had_reasoning:
            generation.reasoning_gap = "\n\n"
        try:
            async with asyncio.timeout(settings.KIMICHAT_GENERATION_TIME_LIMIT):
                # One round per upstream call; a round that ends with tool calls is followed by another (tools.py).
                while True:
                    loop.begin_round(relay.text(), relay.thought())
                    if loop.rounds == 1:
                        calls = await self._stream_round(generation, loop.request, outcome)
                    else:
                        try:  # a later round (the provider searching) is bounded by TOOL_MAX_SECONDS too
                            async with asyncio.timeout_at(loop.deadline()):
                                calls = await self._stream_round(generation, loop.request, outcome)
                        except TimeoutError:
                            bound = loop.time_bound()
                            outcome.fail(Message.Status.INTERRUPTED, bound.code, bound.message)
                            break
                    loop.cite(relay.text())
                    if not calls or outcome.finish_reason == "length":
                        break
                    try:
                        started = loop.follow_up(calls, relay.text(), relay.thought())
                    except tools.ToolBoundHit as exc:
                        outcome.fail(Message.Status.INTERRUPTED, exc.code, exc.message)
                        break
                    outcome.finish_reason = ""
                    await self._tool_frames(generation, started, "searching")
        except asyncio.CancelledError:
            if generation.stop_requested:
                outcome.status = Message.Status.STOPPED
            else:
                outcome.fail(
                    Message.Status.INTERRUPTED,
                    "server_shutdown",
                    "The server restarted while this answer was being written.",
                )
        except TimeoutError:
            outcome.fail(
                Message.Status.INTERRUPTED,
                "time_limit",
                "The answer took longer than the server allows and was cut off.",
            )
        except kimi_errors.KimiError as exc:
            status = Message.Status.INTERRUPTED if isinstance(exc, kimi_errors.Interrupted) else Message.Status.ERROR
            outcome.fail(status, exc.code, exc.message)
            outcome.usage = tools.add_usage(outcome.usage, getattr(exc, "usage", None))
            outcome.request_id = outcome.request_id or exc.request_id
            logger.warning(
                "answer %s failed upstream: %s (request id %s)", generation.message_id, exc.code, exc.request_id or "-"
            )
        except Exception:
            outcome.fail(
                Message.Status.ERROR, "server_error", "Something went wrong on our side while writing this answer."
            )
            logger.exception("answer %s failed", generation.message_id)
        if outcome.status != Message.Status.COMPLETE:
            # A search the provider never answered is not shown as done.
            loop.failed("stopped" if outcome.status == Message.Status.STOPPED else "failed")
        # Shielded: a second cancel (shutdown during a stop) must not leave the answer unstored.
        await asyncio.shield(self._finish(generation, relay, outcome))

    async def _stream_round(self, generation: Generation, request: ChatRequest, outcome: _Outcome) -> tuple:
        """One upstream call of the answer, its pieces relayed; returns the tool calls it ended with (or ())."""
        relay, relayer, loop = generation.relay, self.relayer, generation.tools
        # A piece carries at least one token, so more pieces than the max_tokens we sent means the upstream ignored
        # it: end the answer as the provider should have, with "length". Without max_tokens none is sent and the
        # provider's own default applies (long thinking answers legitimately pass any local guess).
        limit = request.max_tokens
        pieces = 0
        calls: tuple = ()
        try:
            async with contextlib.aclosing(get_client().stream_chat(request)) as events:
                async for event in events:
                    if isinstance(event, ContentDelta | ReasoningDelta) and event.text:
                        if limit is not None and pieces >= limit:
                            outcome.finish_reason = "length"
                            outcome.usage = tools.add_usage(
                                outcome.usage,
                                Usage(
                                    prompt_tokens=generation.prompt_tokens,
                                    completion_tokens=pieces,
                                    total_tokens=generation.prompt_tokens + pieces,
                                ),
                            )
                            outcome.usage_estimated = True
                            break
                        pieces += 1
                    if isinstance(event, ContentDelta):
                        if event.text:
                            generation.thinking_ended()
                        # Only a later round's first piece takes a separator: joining the text so far for every
                        # piece made an answer's cost grow with the square of its length.
                        gap = loop.separator(relay.text()) if loop.rounds > 1 else ""
                        await relayer.add(relay, gap + event.text, "")
                    elif isinstance(event, ReasoningDelta):
                        if event.text:
                            generation.thinking_began()
                        if generation.reasoning_gap and event.text:
                            await relayer.add(relay, "", generation.reasoning_gap)
                            generation.reasoning_gap = ""
                        await relayer.add(relay, "", event.text)
                    elif isinstance(event, ToolCalls):
                        calls = event.calls
                    elif isinstance(event, Finish):
                        outcome.finish_reason = event.reason
                    elif isinstance(event, Usage):
                        outcome.usage = tools.add_usage(outcome.usage, event)
                    elif isinstance(event, ResponseMeta):
                        outcome.request_id = event.request_id
                        if loop.rounds > 1:  # the provider answered the searches it was sent
                            await self._tool_frames(generation, loop.searched(), "done")
        finally:
            loop.completion_used += pieces
        return calls

    async def _tool_frames(self, generation: Generation, searches: list, status: str) -> None:
        """The searches stored on the row, then a ``tool`` frame per search (after the answer's pieces so far): a tab
        that subscribes in between finds them in its snapshot, and the frame only confirms them."""
        relay, loop = generation.relay, generation.tools
        try:
            await database_sync_to_async(save_searches)(generation.message_id, loop.as_list())
        except Exception:  # noqa: BLE001 - the frames still go out; the final store writes the searches again
            logger.warning("could not store the searches of answer %s", generation.message_id, exc_info=True)
        await self.relayer.flush(relay)
        for search in searches:
            await self.relayer.publish(
                relay,
                {
                    "type": "chat.tool",
                    "message_id": generation.message_id,
                    "conversation_id": generation.conversation_id,
                    "seq": relay.seq,
                    "name": tools.WEB_SEARCH,
                    "query": search.query,
                    "status": status,
                },
            )

    async def _finish(self, generation: Generation, relay: Relay, outcome: _Outcome) -> None:
        message_id = generation.message_id
        try:
            try:
                await self.relayer.close(relay)  # the last coalesced piece goes out before `done`
            except Exception:  # noqa: BLE001 - the whole text is in memory: store it even if Redis is away
                logger.warning("last flush of answer %s failed; storing the answer anyway", message_id, exc_info=True)
            text, thought = relay.text(), relay.thought()
            generation.thinking_ended()  # an answer that only thought, or was stopped while thinking
            usage, estimated = outcome.usage, outcome.usage_estimated
            loop = generation.tools
            searches = loop.as_list() if loop is not None and loop.searches else None
            if usage is None and (text or thought or searches):
                start = generation.start  # a continuation is charged for what it added
                added, thought_added = text[len(start.content) :], thought[len(start.reasoning) :]
                usage, estimated = usage_estimate(generation.prompt_tokens, added, thought_added), True
            fees = Decimal(0)
            if searches:  # each search is charged its fee, stopped or failed after it or not [notes §8]
                fees = await database_sync_to_async(search_fees.search_fee)(generation.model) * len(searches)
            message, balance = await self._store_final(
                generation,
                status=outcome.status,
                content=text,
                reasoning=thought,
                seq=relay.seq,
                finish_reason=outcome.finish_reason,
                usage=usage,
                usage_estimated=estimated,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
                request_id=outcome.request_id,
                searches=searches,
                fees=fees,
                reasoning_ms=generation.thinking_ms,
            )
        except Exception:
            logger.exception("could not store answer %s; the reaper will mark it interrupted", message_id)
            await self._forget(generation)
            return
        # Forgotten before `done` goes out: a Continue that `done` prompts runs the same message in the same
        # conversation, and its state, relay and control-group membership must not be dropped by this one's.
        await self._forget(generation)
        try:
            if outcome.error_code:
                await self.relayer.publish(
                    relay,
                    {
                        "type": "chat.error",
                        "code": outcome.error_code,
                        "message": outcome.error_message,
                        "message_id": message_id,
                        "conversation_id": generation.conversation_id,
                        "retryable": outcome.error_code in RETRYABLE_CODES,
                    },
                )
            await self.relayer.publish(relay, _done_event(message, balance))
        except Exception:  # noqa: BLE001 - stored already; open tabs catch up when they resubscribe
            logger.warning("answer %s is stored but its last frames were not published", message_id, exc_info=True)
        if message.status == Message.Status.COMPLETE and message.content and generation.continued is None:
            titles.after_answer(generation.conversation_id, message_id)  # its own task: never touches this answer

    async def _forget(self, generation: Generation) -> None:
        if self.running.get(generation.conversation_id) is generation:
            del self.running[generation.conversation_id]
        if generation.relay is not None:
            self.relayer.forget(generation.relay)
        with contextlib.suppress(Exception):
            await self.layer.group_discard(control_group(generation.conversation_id), self.control_channel)
        with contextlib.suppress(Exception):
            await self.state.finish(generation.message_id)

    async def _store_final(self, generation: Generation, **fields) -> tuple[Message | None, Decimal | None]:
        """finish_message (with the answers that end meanwhile: ``finish_many``), retried for a while if the database
        is briefly unavailable."""
        final = Final(
            generation.message_id, {**fields, "reservation": generation.reservation, "continued": generation.continued}
        )
        delay = 0.5
        for attempt in range(6):
            try:
                return await _final_stores.submit(final)
            except Exception:
                if attempt == 5:
                    raise
                logger.warning("storing answer %s failed; retrying in %.1fs", generation.message_id, delay)
                await asyncio.sleep(delay)
                delay *= 2
        return None, None


async def _store_batch(finals: list[Final]) -> list:
    return await db_threads.off_the_loop(finish_many, finals)


# The answers that end while a batch of final stores runs wait for it and are stored together (services/batching.py),
# as the user API's settlements are (api_v1/common.py).
_final_stores = batching.Batches(_store_batch, lambda: settings.KIMICHAT_SEND_BATCH)


def _done_event(message: Message, balance: Decimal | None) -> dict:
    data = message_to_dict(message)
    return {
        "type": "chat.done",
        "message_id": message.pk,
        "conversation_id": message.conversation_id,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "usage": data["usage"],
        "cost": data["cost"],
        "balance": str(balance) if balance is not None else None,
        "error": data["error"],
        "message": data,
    }


RETRYABLE_CODES = {
    "upstream_rate_limited",
    "upstream_overloaded",
    "upstream_server_error",
    "upstream_timeout",
    "upstream_connection_error",
    "upstream_interrupted",
    "server_shutdown",
    "server_error",
    "worker_lost",
    "time_limit",
}


def install_shutdown_hook(registry: GenerationRegistry) -> None:
    """Under daphne (a running Twisted reactor): on SIGTERM/SIGINT, finish answers before the process exits.

    Twisted waits for the Deferreds that "before shutdown" triggers return, so the worker keeps serving its running
    answers for up to SHUTDOWN_GRACE seconds, stores the rest as interrupted, then closes the Kimi connection pool.
    New sends are refused meanwhile (``accepting``), and new sockets are closed with 1012 so browsers reconnect to
    another worker.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False) or getattr(registry, "_hooked", False):
        return
    from twisted.internet import defer

    async def drain() -> None:
        logger.info("shutting down: letting %d answer(s) finish", len(registry.running))
        await registry.shutdown(settings.KIMICHAT_SHUTDOWN_GRACE)
        with contextlib.suppress(TimeoutError):  # titles being written settle or release their credits first
            await asyncio.wait_for(titles.wait_for_titles(), timeout=10)
        await close_client()
        await _end_leftover_tasks()

    def before_shutdown():
        return defer.Deferred.fromFuture(asyncio.ensure_future(drain()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    registry._hooked = True


LEFTOVER_TASKS_WAIT = 5  # seconds


async def _end_leftover_tasks() -> None:
    """Cancel what still waits on this loop (a socket's receive, a background loop) and let it end while the loop
    runs. A coroutine left suspended is closed by the interpreter's last garbage collection instead, after
    ``asyncio``'s modules are torn down; CPython 3.11 then crashes (SIGSEGV in ``Future.__repr__`` while
    ``asyncio.Queue.get`` cleans up its getter: ``tests/test_reliability_server.py``, SIGTERM during an answer)."""
    current = asyncio.current_task()
    leftover = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.wait(leftover, timeout=LEFTOVER_TASKS_WAIT)


_registries: dict[int, GenerationRegistry] = {}


def get_registry() -> GenerationRegistry:
    """The registry of the running event loop (daphne has one; tests make one per test)."""
    loop = asyncio.get_running_loop()
    registry = _registries.get(id(loop))
    if registry is None or registry._loop is not loop:
        registry = GenerationRegistry()
        registry._loop = loop
        _registries[id(loop)] = registry
    return registry
