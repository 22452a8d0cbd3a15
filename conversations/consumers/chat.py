"""The chat websocket (protocol: docs/websocket-protocol.md).

Thin: it validates frames (``services.frames``) and calls the generation service. It never awaits an upstream
stream itself: answers run in tasks owned by the service, so ``stop`` and a disconnect are handled at once, and an
answer goes on when its tab closes.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import orjson
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models import prefetch_related_objects
from django.utils import translation

from conversations.models import Conversation, Message
from conversations.serializers import message_to_dict
from conversations.services.accounts import sessions
from conversations.services.chat import frames
from conversations.services.chat.registry import RETRYABLE_CODES, get_registry
from conversations.services.chat.relay import conversation_group, user_group
from conversations.services.chat.sending import (
    Accepted,
    SendRefused,
    aprepare_continue,
    aprepare_edit,
    aprepare_regenerate,
    aprepare_send,
    known_models,
)
from conversations.services.history import temporary as temporary_chats

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_BINARY_FRAME = 4400
CLOSE_TOO_MANY_BAD_FRAMES = 4408
CLOSE_SERVICE_RESTART = 1012
MAX_BAD_FRAMES = 50  # in a row; a client this broken is closed rather than answered forever
MAX_FRAME_BYTES = 1_000_000  # the message limit is 100,000 characters: 4 bytes each and JSON around them fit
MAX_SUBSCRIPTIONS = 50


def _owned_conversation(user, conversation_id: int) -> Conversation | None:
    return Conversation.objects.for_user(user).filter(pk=conversation_id).first()


def _latest_messages(conversation_id: int) -> list[Message]:
    """What a subscriber needs at once: every answer still streaming, and the last turn (final or not)."""
    current = Message.objects.filter(conversation_id=conversation_id).current()
    latest = list(current.order_by("-id")[:2])
    streaming = list(current.in_progress().exclude(pk__in=[m.pk for m in latest]))
    messages = sorted([*latest, *streaming], key=lambda m: m.pk)
    prefetch_related_objects(messages, "attachments")  # serialized on the event loop, where a query is an error
    return messages


def _language_of(scope) -> str:
    """The language LocaleMiddleware chose for the page (language cookie, then Accept-Language), for the messages
    the socket sends: a refused frame's message is shown to the person as it is."""
    headers = dict(scope.get("headers") or [])
    request = SimpleNamespace(
        COOKIES=scope.get("cookies") or {},
        META={"HTTP_ACCEPT_LANGUAGE": headers.get(b"accept-language", b"").decode("latin-1")},
    )
    return translation.get_language_from_request(request)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    # Frames that start (and will charge for) an answer: their session check, and the refusal of an account that
    # awaits approval, run in the trip that prepares them (``sending._Admitted``).
    STARTS_ANSWER = frames.Send | frames.Regenerate | frames.Edit | frames.Continue

    async def connect(self):
        self.user = self.scope["user"]
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.session_key = self.scope["session"].session_key  # the session this socket lives and dies with
        self.language = _language_of(self.scope)
        self.subscriptions: set[int] = set()
        self.last_seq: dict[int, int] = {}  # message id -> last seq this socket has (snapshot or delta)
        self.bad_frames = 0
        self.registry = get_registry()
        if not self.registry.accepting:
            await self.close(code=CLOSE_SERVICE_RESTART)  # this worker is draining: reconnect to another one
            return
        self.resyncing: set[int] = set()  # answers whose snapshot is being read again after a gap
        self.background: set[asyncio.Task] = set()
        self.joining: dict[int, list] = {}  # conversation id -> events that came while its snapshot was being read
        await self.registry.ensure_started()
        self.registry.follow_user(self.user.pk, self)
        # The session's group hears its logout; the user's group, changes to the user (services/accounts/sessions).
        await self.channel_layer.group_add(sessions.session_group(self.session_key), self.channel_name)
        await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        user = getattr(self, "user", None)
        if user is None or not user.is_authenticated or not hasattr(self, "subscriptions"):
            return
        self.registry.unfollow_user(user.pk, self)
        for conversation_id in self.subscriptions:
            self.registry.unfollow(conversation_id, self)
        await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
        await self.channel_layer.group_discard(sessions.session_group(self.session_key), self.channel_name)
        for conversation_id in self.subscriptions:
            await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
        # Answers are not stopped: they belong to the generation service and finish on their own.

    # --- frames in ---------------------------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if bytes_data is not None:
            await self.close(code=CLOSE_BINARY_FRAME)
            return
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self._refuse("bad_frame", f"A frame must be text of at most {MAX_FRAME_BYTES:,} bytes.")
            return
        try:
            data = orjson.loads(text_data)
        except orjson.JSONDecodeError:
            await self._refuse("bad_json", "The frame is not valid JSON.")
            return
        await self.receive_json(data)

    async def receive_json(self, content, **kwargs):
        try:
            with translation.override(self.language):
                frame = frames.parse_frame(content)
        except frames.FrameError as exc:
            await self._refuse(exc.code, exc.message, conversation_id=exc.conversation_id, **exc.extra)
            return
        # A frame that starts an answer checks the session in the same trip to the database thread as its preparation
        # (``sending._Admitted``); every other frame but a ping checks it first.
        if not isinstance(frame, frames.Ping | self.STARTS_ANSWER) and not await self._signed_in():
            return  # closed: nothing this frame asked for is done, read or charged
        handler = {
            frames.Send: self.on_send,
            frames.Stop: self.on_stop,
            frames.Subscribe: self.on_subscribe,
            frames.Unsubscribe: self.on_unsubscribe,
            frames.Regenerate: self.on_regenerate,
            frames.Edit: self.on_edit,
            frames.Continue: self.on_continue,
            frames.Ping: self.on_ping,
        }[type(frame)]
        try:
            await handler(frame)
        except sessions.SessionEnded:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        except SendRefused as exc:
            await self._refuse(
                exc.code, exc.message, conversation_id=exc.conversation_id, retryable=exc.retryable, **exc.extra
            )
            return
        except Exception:
            logger.exception("chat frame %s failed", type(frame).__name__)
            await self._refuse("server_error", "Something went wrong on our side; nothing was saved.", retryable=True)
            return
        self.bad_frames = 0

    async def _signed_in(self) -> bool:
        """Whether this socket's session still logs its user in; if not, the socket is closed with 4401."""
        if await database_sync_to_async(sessions.session_is_valid)(self.session_key, self.user.pk):
            return True
        await self.close(code=CLOSE_NOT_AUTHENTICATED)
        return False

    async def on_ping(self, frame: frames.Ping):
        await self.send_json({"type": "pong"})

    def _check_accepting(self) -> None:
        if not self.registry.accepting:
            raise SendRefused("server_shutdown", "The server is restarting. Try again in a moment.", retryable=True)

    async def _start(self, accepted: Accepted) -> None:
        if accepted.duplicate:
            # A resend after a reconnect: show what was stored the first time; create and run nothing.
            await self._join_with_snapshots(accepted.conversation.pk)
            return
        if accepted.conversation.temporary:
            self.registry.keep_temporary(accepted.conversation.pk)
        await self._join(accepted.conversation.pk)
        await self.registry.launch(accepted)

    async def on_send(self, frame: frames.Send):
        self._check_accepting()
        accepted = await aprepare_send(
            self.user,
            session_key=self.session_key,
            language=self.language,
            conversation_id=frame.conversation_id,
            content=frame.content,
            client_msg_id=frame.client_msg_id,
            model=frame.model,
            known_models=await known_models(),
            new_conversation=frame.new_conversation,
            attachments=frame.attachments,
        )
        await self._start(accepted)

    async def on_regenerate(self, frame: frames.Regenerate):
        self._check_accepting()
        accepted = await aprepare_regenerate(
            self.user,
            session_key=self.session_key,
            language=self.language,
            conversation_id=frame.conversation_id,
            client_msg_id=frame.client_msg_id,
            model=frame.model,
            known_models=await known_models(),
        )
        await self._start(accepted)

    async def on_edit(self, frame: frames.Edit):
        self._check_accepting()
        accepted = await aprepare_edit(
            self.user,
            session_key=self.session_key,
            language=self.language,
            conversation_id=frame.conversation_id,
            message_id=frame.message_id,
            content=frame.content,
            client_msg_id=frame.client_msg_id,
            known_models=await known_models(),
            attachments=frame.attachments,
        )
        await self._start(accepted)

    async def on_continue(self, frame: frames.Continue):
        self._check_accepting()
        accepted = await aprepare_continue(
            self.user,
            session_key=self.session_key,
            language=self.language,
            conversation_id=frame.conversation_id,
            message_id=frame.message_id,
            client_msg_id=frame.client_msg_id,
            known_models=await known_models(),
        )
        await self._start(accepted)

    async def on_stop(self, frame: frames.Stop):
        if await database_sync_to_async(_owned_conversation)(self.user, frame.conversation_id) is None:
            raise SendRefused("not_found", "This conversation does not exist.", conversation_id=frame.conversation_id)
        await self.registry.stop(frame.conversation_id)

    async def on_subscribe(self, frame: frames.Subscribe):
        conversation = await database_sync_to_async(_owned_conversation)(self.user, frame.conversation_id)
        if conversation is None:
            raise SendRefused("not_found", "This conversation does not exist.", conversation_id=frame.conversation_id)
        if frame.conversation_id not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise SendRefused("bad_frame", f"A socket can follow at most {MAX_SUBSCRIPTIONS} conversations.")
        if conversation.temporary:
            # Seen now, not only at the next heartbeat: the reaper must not take a chat a reload has just reopened.
            await database_sync_to_async(temporary_chats.keep_alive)([conversation.pk])
            self.registry.keep_temporary(conversation.pk)
        await self._join_with_snapshots(frame.conversation_id)

    async def on_unsubscribe(self, frame: frames.Unsubscribe):
        if frame.conversation_id in self.subscriptions:
            self.subscriptions.discard(frame.conversation_id)
            self.registry.unfollow(frame.conversation_id, self)
            await self.channel_layer.group_discard(conversation_group(frame.conversation_id), self.channel_name)

    async def _join(self, conversation_id: int) -> None:
        # Join before any snapshot is read: a delta published meanwhile is then either in the snapshot or received.
        if conversation_id not in self.subscriptions:
            self.subscriptions.add(conversation_id)
            await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
            await self.registry.follow(conversation_id, self)

    async def _join_with_snapshots(self, conversation_id: int) -> None:
        """Join, then send the conversation's latest messages. Events of this process's answers that arrive while
        the snapshots are read wait (``joining``) and follow them, as the channel layer's queue would have kept
        them: a ``done`` is never overtaken by the snapshot of the answer it ends."""
        waiting = self.joining.setdefault(conversation_id, [])
        try:
            await self._join(conversation_id)
            for message in await database_sync_to_async(_latest_messages)(conversation_id):
                await self._send_snapshot(message)
        finally:
            self.joining.pop(conversation_id, None)
        for group, event, frame in waiting:
            await self.deliver(group, event, frame)

    async def _send_snapshot(self, message: Message) -> None:
        data = message_to_dict(message)
        if not message.is_final:
            snapshot = await self.registry.snapshot(message.pk)
            if snapshot is not None:  # else: only the last checkpoint survives (the reaper will finish it)
                data.update(content=snapshot.content, reasoning=snapshot.reasoning, seq=snapshot.seq)
            self.last_seq[message.pk] = data["seq"]
        await self.send_json({"type": "message", "message": data})

    async def _refuse(self, code: str, message: str, *, conversation_id=None, retryable=None, **extra):
        self.bad_frames += 1
        frame = {
            "type": "error",
            "code": code,
            "message": message,
            "message_id": extra.pop("message_id", None),
            "conversation_id": conversation_id,
            "retryable": code in RETRYABLE_CODES if retryable is None else retryable,
            **extra,
        }
        await self.send_json(frame)
        if self.bad_frames >= MAX_BAD_FRAMES:
            await self.close(code=CLOSE_TOO_MANY_BAD_FRAMES)

    # --- events of this process's answers (handed over directly by the relay) ---------------------------------

    async def deliver(self, group: str, event: dict, frame: str | None) -> None:
        """An event of an answer running in this process; ``frame``: a delta's JSON, encoded once for all sockets."""
        kind = event["type"]
        if kind == "chat.conversation":
            await self.chat_conversation(event)
            return
        conversation_id = event["message"]["conversation_id"] if kind == "chat.message" else event["conversation_id"]
        waiting = self.joining.get(conversation_id)
        if waiting is not None:
            waiting.append((group, event, frame))
            return
        if kind == "chat.delta":
            last = self.last_seq.get(event["message_id"], 0)
            if event["seq"] > last + 1:
                # Not expected on this path (frames arrive in order, and a joining socket's wait in line): resync
                # in a task of its own rather than hold up the relay, which serves every answer of the process.
                self._resync_later(event["message_id"])
                return
            await self._send_delta(event, frame)
        else:
            await getattr(self, kind.replace(".", "_"))(event)

    # --- events from the channel layer (other workers, the reaper) ------------------------------------------------

    async def dispatch(self, message):
        origin = message.get("origin")
        if origin is not None and origin == self.registry.origin:
            return  # this process's own answer, sent to other workers' sockets: this socket had it directly
        # channels runs close_old_connections in the sync thread before every handler: a thread hop per message, on
        # the one thread that every database call of the process shares, where it queues behind a burst's sends (and
        # a send frame's hop put the send itself behind them). This consumer reaches the database only through
        # database_sync_to_async and the send path's trip, which close old connections themselves: no hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def auth_close(self, event):
        await self.close(code=CLOSE_NOT_AUTHENTICATED)  # this session logged out

    async def auth_revalidate(self, event):
        await self._signed_in()  # the user changed (password, deactivation): is this session still theirs?

    async def auth_rekey(self, event):
        # This session changed the password and lives on under a new key: follow it.
        await self.channel_layer.group_discard(sessions.session_group(self.session_key), self.channel_name)
        self.session_key = event["session_key"]
        await self.channel_layer.group_add(sessions.session_group(self.session_key), self.channel_name)

    async def chat_conversation(self, event):
        await self.send_json({"type": "conversation", "conversation": event["conversation"]})

    async def chat_message(self, event):
        message = event["message"]
        if message["status"] in ("streaming", "pending"):
            self.last_seq.setdefault(message["id"], message["seq"])
        await self.send_json({"type": "message", "message": message})

    def _resync_later(self, message_id: int) -> None:
        if message_id in self.resyncing:
            return
        self.resyncing.add(message_id)

        async def resync():
            try:
                message = await database_sync_to_async(Message.objects.filter(pk=message_id).first)()
                if message is not None:
                    await self._send_snapshot(message)
            finally:
                self.resyncing.discard(message_id)

        task = asyncio.ensure_future(resync())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def chat_delta(self, event):
        await self._send_delta(event, None)

    async def _send_delta(self, event: dict, frame: str | None) -> None:
        message_id, seq = event["message_id"], event["seq"]
        last = self.last_seq.get(message_id, 0)
        if seq <= last:
            return  # already in the snapshot this socket was sent
        if seq > last + 1:
            # A frame was lost on the way (the channel layer may drop under load): send a fresh snapshot instead.
            message = await database_sync_to_async(Message.objects.filter(pk=message_id).first)()
            if message is not None:
                await self._send_snapshot(message)
            if self.last_seq.get(message_id, 0) >= seq:
                return
        self.last_seq[message_id] = seq
        await self.send(text_data=frame or orjson.dumps({**event, "type": "delta"}).decode())

    async def chat_done(self, event):
        self.last_seq.pop(event["message_id"], None)
        await self.send_json({**event, "type": "done"})

    async def chat_error(self, event):
        await self.send_json({**event, "type": "error"})

    async def chat_tool(self, event):
        await self.send_json({**event, "type": "tool"})

    @classmethod
    async def encode_json(cls, content):
        return orjson.dumps(content).decode()

    @classmethod
    async def decode_json(cls, text_data):
        return orjson.loads(text_data)
