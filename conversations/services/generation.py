"""Answers: accepted, stored, run and relayed by a service that owns them, not by the socket that asked.

Layered as check → do → notify:

- ``prepare_*`` (synchronous, one transaction) validates a send, regenerate or edit, stores the user message and an
  assistant placeholder in status ``streaming`` and reserves its credits; a refusal raises ``SendRefused`` and
  stores nothing.
- ``GenerationRegistry.launch`` runs the upstream stream in a task of its own. Its pieces go out through the relay
  (``relay.py``: straight to this process's sockets, through the stream state and the channel layer to other
  workers'); the database is written only at checkpoints (every few seconds, all answers at once) and when the
  answer ends.
- ``finish_message`` stores the final answer with its status and usage and settles its credits.

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
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.kimi import errors as kimi_errors
from conversations.kimi.client import close_client, get_client
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta, ResponseMeta, Usage
from conversations.kimi.params import ChatRequest, resolve_params
from conversations.kimi.tokens import estimate_tokens_locally
from conversations.models import Conversation, Message
from conversations.serializers import conversation_to_dict, message_to_dict
from conversations.services import credits
from conversations.services.context import ContextTooLong, answer_budget, build_messages, check_fits, title_from
from conversations.services.ratelimit import RateLimited, check_rate_limit
from conversations.services.relay import Relay, Relayer, conversation_group
from conversations.services.stream_state import Snapshot, get_stream_state, heartbeat_ttl

logger = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def control_group(conversation_id: int) -> str:
    return f"genctl.{conversation_id}"


class SendRefused(Exception):
    """A send (or regenerate/edit) that was not accepted. Nothing was stored."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, conversation_id=None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.conversation_id = conversation_id
        self.extra = extra


@dataclass
class Accepted:
    conversation: Conversation
    assistant: Message
    user_message: Message | None = None  # None for a regenerate
    created_conversation: bool = False
    duplicate: bool = False  # a resend of a client_msg_id already stored: nothing new was created
    superseded: list[Message] = field(default_factory=list)  # earlier versions this send replaced
    request: ChatRequest | None = None
    reservation: credits.Reservation | None = None


# --- check and do (synchronous, one transaction each) -----------------------------------------------------------


def _refuse_not_found(conversation_id) -> SendRefused:
    return SendRefused("not_found", "This conversation does not exist.", conversation_id=conversation_id)


def _existing(user, client_msg_id: uuid.UUID) -> Accepted | None:
    """The messages a client_msg_id already produced, for an idempotent resend."""
    stored = Message.objects.for_user(user).select_related("conversation").filter(client_msg_id=client_msg_id).first()
    if stored is None:
        return None
    conversation = stored.conversation
    if stored.role == Message.Role.ASSISTANT:  # a regenerate carries its id on the new answer
        return Accepted(conversation=conversation, assistant=stored, duplicate=True)
    answer = (
        Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT, id__gt=stored.pk)
        .order_by("id")
        .first()
    )
    return Accepted(conversation=conversation, assistant=answer, user_message=stored, duplicate=True)


def _after_duplicate_id(user, client_msg_id: uuid.UUID) -> Accepted:
    """The client_msg_id hit its unique constraint: a concurrent resend of ours committed first (answer with what it
    stored), or the id belongs to someone else's message (refuse: retrying with it can never succeed)."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is None:
        raise SendRefused("bad_frame", "'client_msg_id' is already in use; send with a new one.")
    return duplicate


def _locked_conversation(user, conversation_id: int) -> Conversation:
    # The row lock serializes sends in one conversation (two tabs at once): the second sees the first's answer.
    conversation = Conversation.objects.for_user(user).select_for_update().filter(pk=conversation_id).first()
    if conversation is None:
        raise _refuse_not_found(conversation_id)
    return conversation


def _check_not_busy(conversation: Conversation) -> None:
    if conversation.messages.in_progress().exists():
        raise SendRefused(
            "busy",
            "An answer is still being written in this conversation. Wait for it or stop it first.",
            retryable=True,
            conversation_id=conversation.pk,
        )


def _check_concurrency(user, conversation_id) -> None:
    limit = settings.KIMICHAT_MAX_CONCURRENT_ANSWERS
    if Message.objects.for_user(user).in_progress().count() > limit:  # the new placeholder is counted already
        raise SendRefused(
            "too_many_answers",
            f"You already have {limit} answers being written at once. Wait for one to finish.",
            retryable=True,
            conversation_id=conversation_id,
            limit=limit,
        )


def _chat_request(conversation: Conversation, model: str, thread: list[Message]) -> tuple[ChatRequest, int]:
    request = ChatRequest(
        model=model,
        messages=[{"role": "user", "content": "-"}],  # replaced below, once the thinking mode is known
        temperature=conversation.temperature,
        top_p=conversation.top_p,
        max_tokens=conversation.max_tokens,
        json_mode=conversation.json_mode,
        thinking=conversation.thinking,
    )
    try:
        params = resolve_params(request)
        request.messages, prompt_tokens = build_messages(
            thread,
            model=model,
            system_prompt=conversation.system_prompt,
            max_tokens=conversation.max_tokens,
            thinks=params.thinks,
        )
    except kimi_errors.InvalidParameter as exc:
        raise SendRefused("invalid_parameter", exc.message, conversation_id=conversation.pk) from None
    except ContextTooLong as exc:
        raise SendRefused(
            "context_too_long", str(exc), conversation_id=conversation.pk, tokens=exc.tokens, window=exc.window
        ) from None
    return request, prompt_tokens


def _start_answer(user, conversation: Conversation, model: str, thread: list[Message], **fields) -> Accepted:
    """Store the assistant placeholder, reserve its credits, check the per-user cap. Inside the caller's atomic."""
    request, prompt_tokens = _chat_request(conversation, model, thread)
    assistant = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, model=model, **fields
    )
    try:
        # Locks the user's credit account row until commit: concurrent sends of one user queue here, which also
        # makes the concurrency cap below exact.
        reservation = credits.reserve(
            user,
            model=model,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=answer_budget(conversation.max_tokens),
            message=assistant,
        )
    except credits.InsufficientCredits as exc:
        raise SendRefused(
            "insufficient_credits",
            f"This answer may cost up to {exc.estimated_cost.normalize():f} credits and you have "
            f"{exc.balance.normalize():f}. Ask an administrator for more credits.",
            conversation_id=conversation.pk,
            balance=str(exc.balance),
            estimated_cost=str(exc.estimated_cost),
        ) from None
    _check_concurrency(user, conversation.pk)
    assistant.prompt_tokens = prompt_tokens
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["updated_at"])
    return Accepted(conversation=conversation, assistant=assistant, request=request, reservation=reservation)


def _check_model(model: str, known_models: list[str], conversation_id) -> None:
    if model not in known_models:
        raise SendRefused(
            "unknown_model", f"The model {model[:100]!r} is not available.", conversation_id=conversation_id
        )


def _user_message(conversation: Conversation, content: str, client_msg_id: uuid.UUID) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content=content,
        client_msg_id=client_msg_id,
        status=Message.Status.COMPLETE,
        completed_at=timezone.now(),
    )


def _thread(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.current().order_by("id"))


def prepare_send(
    user,
    *,
    conversation_id: int | None,
    content: str,
    client_msg_id: uuid.UUID,
    model: str | None,
    known_models: list[str],
    new_conversation: dict | None = None,
) -> Accepted:
    """``new_conversation``: validated field values (system prompt, settings) for a conversation this send creates."""
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            created = conversation_id is None
            if created:
                conversation = Conversation.objects.create(
                    owner=user,
                    model=model or settings.KIMI_DEFAULT_MODEL,
                    title=title_from(content),
                    **(new_conversation or {}),
                )
            else:
                conversation = _locked_conversation(user, conversation_id)
                _check_not_busy(conversation)
            chosen = model or conversation.model or settings.KIMI_DEFAULT_MODEL
            _check_model(chosen, known_models, conversation_id)
            try:
                check_fits(
                    content, model=chosen, system_prompt=conversation.system_prompt, max_tokens=conversation.max_tokens
                )
            except ContextTooLong as exc:
                raise SendRefused(
                    "context_too_long", str(exc), conversation_id=conversation_id, tokens=exc.tokens, window=exc.window
                ) from None
            thread = [] if created else _thread(conversation)
            user_message = _user_message(conversation, content, client_msg_id)
            if not created and not conversation.title:
                conversation.title = title_from(content)
                conversation.save(update_fields=["title"])
            accepted = _start_answer(user, conversation, chosen, [*thread, user_message])
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    accepted.user_message = user_message
    accepted.created_conversation = created
    return accepted


def _last_turn(conversation: Conversation) -> tuple[list[Message], Message, Message | None]:
    """The live thread, its last user message, and the answer to it (if any)."""
    thread = _thread(conversation)
    users = [m for m in thread if m.role == Message.Role.USER]
    if not users:
        raise SendRefused("not_found", "There is no message to answer again.", conversation_id=conversation.pk)
    last_user = users[-1]
    answers = [m for m in thread if m.role == Message.Role.ASSISTANT and m.pk > last_user.pk]
    return thread, last_user, (answers[-1] if answers else None)


def prepare_regenerate(
    user, *, conversation_id: int, client_msg_id: uuid.UUID, model: str | None, known_models: list[str]
) -> Accepted:
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            conversation = _locked_conversation(user, conversation_id)
            _check_not_busy(conversation)
            chosen = model or conversation.model
            _check_model(chosen, known_models, conversation_id)
            thread, last_user, old_answer = _last_turn(conversation)
            upto = [m for m in thread if m.pk <= last_user.pk]
            accepted = _start_answer(user, conversation, chosen, upto, client_msg_id=client_msg_id)
            if old_answer is not None:
                old_answer.superseded_by = accepted.assistant
                old_answer.save(update_fields=["superseded_by"])
                accepted.superseded = [old_answer]
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    return accepted


def prepare_edit(
    user, *, conversation_id: int, message_id: int, content: str, client_msg_id: uuid.UUID, known_models: list[str]
) -> Accepted:
    duplicate = _existing(user, client_msg_id)
    if duplicate is not None:
        return duplicate
    try:
        with transaction.atomic():
            conversation = _locked_conversation(user, conversation_id)
            _check_not_busy(conversation)
            thread, last_user, old_answer = _last_turn(conversation)
            if last_user.pk != message_id:
                raise SendRefused(
                    "not_found", "Only the last message you sent can be edited.", conversation_id=conversation_id
                )
            chosen = conversation.model
            _check_model(chosen, known_models, conversation_id)
            new_user = _user_message(conversation, content, client_msg_id)
            upto = [m for m in thread if m.pk < last_user.pk] + [new_user]
            accepted = _start_answer(user, conversation, chosen, upto)
            last_user.superseded_by = new_user
            last_user.save(update_fields=["superseded_by"])
            accepted.superseded = [last_user]
            if old_answer is not None:
                old_answer.superseded_by = accepted.assistant
                old_answer.save(update_fields=["superseded_by"])
                accepted.superseded.append(old_answer)
        accepted.user_message = new_user
    except IntegrityError:
        return _after_duplicate_id(user, client_msg_id)
    return accepted


def checkpoint(rows: list[tuple[int, str, str, int]]) -> None:
    """Save the partial text of answers in progress (message id, content, reasoning, seq), so a crash loses at most a
    few seconds of them. One transaction for all the answers of a worker: one commit, one trip to the database
    thread, however many are running. An answer that has ended meanwhile is left as it was stored."""
    with transaction.atomic():
        for message_id, content, reasoning, seq in rows:
            Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
                content=content, reasoning=reasoning, seq=seq
            )


def finish_message(
    message_id: int,
    *,
    status: str,
    content: str,
    reasoning: str,
    seq: int,
    finish_reason: str = "",
    usage: Usage | None = None,
    usage_estimated: bool = False,
    error_code: str = "",
    error_message: str = "",
    request_id: str = "",
    reservation: credits.Reservation | None = None,
) -> tuple[Message, Decimal | None]:
    """Store the answer's final state and settle its credits; returns the message and the balance after."""
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        message.status = status
        message.content = content
        message.reasoning = reasoning
        message.seq = seq
        message.finish_reason = finish_reason
        message.error_code = error_code
        message.error_message = error_message
        message.upstream_request_id = request_id[:128]
        message.completed_at = timezone.now()
        message.save(
            update_fields=[
                "status",
                "content",
                "reasoning",
                "seq",
                "finish_reason",
                "error_code",
                "error_message",
                "upstream_request_id",
                "completed_at",
            ]
        )
        balance = None
        if reservation is not None:
            if not content and not reasoning and status != Message.Status.COMPLETE:
                # Nothing was generated (a failed request, or stopped before the first token): it costs nothing.
                balance = credits.release(reservation, message=message, note=error_code or status)
            else:
                balance = credits.settle(reservation, message=message, usage=usage, estimated=usage_estimated).balance
        Conversation.objects.filter(pk=message.conversation_id).update(updated_at=timezone.now())
    return message, balance


# --- run and notify ---------------------------------------------------------------------------------------------


def _usage_estimate(prompt_tokens: int, content: str, reasoning: str) -> Usage:
    completion = estimate_tokens_locally(content) + estimate_tokens_locally(reasoning)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)


@dataclass
class Generation:
    conversation_id: int
    message_id: int
    user_id: int
    model: str
    request: ChatRequest
    reservation: credits.Reservation | None
    prompt_tokens: int
    task: asyncio.Task | None = None
    relay: Relay | None = None
    stop_requested: bool = False
    shutting_down: bool = False
    started: float = field(default_factory=time.monotonic)


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

    async def snapshot(self, message_id: int) -> Snapshot | None:
        """An answer in progress as its frames so far carried it: this process's own, else the stream state's."""
        snapshot = self.relayer.snapshot(message_id)
        return snapshot if snapshot is not None else await self.state.snapshot(message_id)

    @property
    def multi_process(self) -> bool:
        return type(self.layer) is not InMemoryChannelLayer  # the in-memory layer reaches this process only

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
                if time.monotonic() - last_reap >= reap_every:
                    last_reap = time.monotonic()
                    await self.reap()
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
        candidates = await database_sync_to_async(_in_progress_ids)(heartbeat_ttl() if grace is None else grace)
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
        )
        # The state exists before the task runs, so a subscriber arriving at once finds a snapshot.
        await self.state.start(generation.message_id)
        relay = generation.relay = self.relayer.open(conversation.pk, generation.message_id)
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
        relay, relayer = generation.relay, self.relayer
        outcome = _Outcome()
        # A piece carries at least one token, so more pieces than the max_tokens we sent means the upstream ignored
        # it: end the answer as the provider should have, with "length". Without max_tokens none is sent and the
        # provider's own default applies (long thinking answers legitimately pass any local guess).
        limit = generation.request.max_tokens
        pieces = 0
        try:
            async with (
                asyncio.timeout(settings.KIMICHAT_GENERATION_TIME_LIMIT),
                contextlib.aclosing(get_client().stream_chat(generation.request)) as events,
            ):
                async for event in events:
                    if isinstance(event, ContentDelta | ReasoningDelta) and event.text:
                        if limit is not None and pieces >= limit:
                            outcome.finish_reason = "length"
                            outcome.usage = Usage(
                                prompt_tokens=generation.prompt_tokens,
                                completion_tokens=pieces,
                                total_tokens=generation.prompt_tokens + pieces,
                            )
                            outcome.usage_estimated = True
                            break
                        pieces += 1
                    if isinstance(event, ContentDelta):
                        await relayer.add(relay, event.text, "")
                    elif isinstance(event, ReasoningDelta):
                        await relayer.add(relay, "", event.text)
                    elif isinstance(event, Finish):
                        outcome.finish_reason = event.reason
                    elif isinstance(event, Usage):
                        outcome.usage = event
                    elif isinstance(event, ResponseMeta):
                        outcome.request_id = event.request_id
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
            outcome.usage = outcome.usage or getattr(exc, "usage", None)
            outcome.request_id = outcome.request_id or exc.request_id
            logger.warning(
                "answer %s failed upstream: %s (request id %s)", generation.message_id, exc.code, exc.request_id or "-"
            )
        except Exception:
            outcome.fail(
                Message.Status.ERROR, "server_error", "Something went wrong on our side while writing this answer."
            )
            logger.exception("answer %s failed", generation.message_id)
        # Shielded: a second cancel (shutdown during a stop) must not leave the answer unstored.
        await asyncio.shield(self._finish(generation, relay, outcome))

    async def _finish(self, generation: Generation, relay: Relay, outcome: _Outcome) -> None:
        message_id = generation.message_id
        try:
            try:
                await self.relayer.close(relay)  # the last coalesced piece goes out before `done`
            except Exception:  # noqa: BLE001 - the whole text is in memory: store it even if Redis is away
                logger.warning("last flush of answer %s failed; storing the answer anyway", message_id, exc_info=True)
            text, thought = relay.text(), relay.thought()
            usage, estimated = outcome.usage, outcome.usage_estimated
            if usage is None and (text or thought):
                usage, estimated = _usage_estimate(generation.prompt_tokens, text, thought), True
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
            )
        except Exception:
            logger.exception("could not store answer %s; the reaper will mark it interrupted", message_id)
            await self._forget(generation)
            return
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
        finally:
            await self._forget(generation)

    async def _forget(self, generation: Generation) -> None:
        self.running.pop(generation.conversation_id, None)
        if generation.relay is not None:
            self.relayer.forget(generation.relay)
        with contextlib.suppress(Exception):
            await self.layer.group_discard(control_group(generation.conversation_id), self.control_channel)
        with contextlib.suppress(Exception):
            await self.state.finish(generation.message_id)

    async def _store_final(self, generation: Generation, **fields) -> tuple[Message | None, Decimal | None]:
        """finish_message, retried for a while if the database is briefly unavailable."""
        delay = 0.5
        for attempt in range(6):
            try:
                return await database_sync_to_async(finish_message)(
                    generation.message_id, reservation=generation.reservation, **fields
                )
            except Exception:
                if attempt == 5:
                    raise
                logger.warning("storing answer %s failed; retrying in %.1fs", generation.message_id, delay)
                await asyncio.sleep(delay)
                delay *= 2
        return None, None


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


def _in_progress_ids(grace: float) -> list[int]:
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    return list(Message.objects.in_progress().filter(created_at__lt=cutoff).values_list("id", flat=True))


def reap_message(message_id: int) -> tuple[Message | None, Decimal | None]:
    """Mark an orphaned answer interrupted with the text of its last checkpoint, and settle what it generated."""
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(pk=message_id).first()
        if message is None or message.is_final:
            return None, None
        message.status = Message.Status.INTERRUPTED
        message.error_code = "worker_lost"
        message.error_message = "The server stopped while this answer was being written; it was cut off."
        message.completed_at = timezone.now()
        message.save(update_fields=["status", "error_code", "error_message", "completed_at"])
        balance = None
        reservation = credits.open_reservation_for(message)
        if reservation is not None:
            if message.content or message.reasoning:
                usage = _usage_estimate(message.prompt_tokens, message.content, message.reasoning)
                balance = credits.settle(reservation, message=message, usage=usage, estimated=True).balance
            else:
                balance = credits.release(reservation, message=message, note="worker_lost")
    return message, balance


def reap_all_sync() -> int:
    """For ``manage.py reapgenerations`` at start-up, when no worker is running: every answer left is orphaned."""
    count = 0
    for message_id in _in_progress_ids(0):
        message, _balance = reap_message(message_id)
        count += message is not None
    return count


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
        await close_client()

    def before_shutdown():
        return defer.Deferred.fromFuture(asyncio.ensure_future(drain()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    registry._hooked = True


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


async def known_models() -> list[str]:
    models = await get_client().list_models()
    default = settings.KIMI_DEFAULT_MODEL
    return models if default in models else [*models, default]


def admit(user) -> None:
    """Count the request against the user's rate limits (their tier follows the balance); ``SendRefused`` if over."""
    try:
        check_rate_limit(user, credits.get_balance(user))
    except RateLimited as exc:
        raise SendRefused(
            "rate_limited",
            f"You have reached your limit of {exc.limit} requests per {exc.window}. "
            f"Try again in {exc.retry_after} seconds.",
            retryable=True,
            retry_after=exc.retry_after,
        ) from None


def _admitted(prepare):
    """``prepare`` after ``admit``, in one trip to the database thread: every database and cache call of a process's
    sockets shares that one thread, and under load each trip waits in its queue (a send made seven of them)."""

    def admit_then_prepare(user, **kwargs) -> Accepted:
        admit(user)
        return prepare(user, **kwargs)

    return database_sync_to_async(admit_then_prepare)


aprepare_send = _admitted(prepare_send)
aprepare_regenerate = _admitted(prepare_regenerate)
aprepare_edit = _admitted(prepare_edit)
