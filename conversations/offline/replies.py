"""Writing a planned chat answer: OpenAI-format SSE, Anthropic-format SSE, or one JSON body, with the stream faults
(drops, silences, garbage, endless answers, errors mid-stream) where they strike."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from conversations.offline import directives, wire
from conversations.offline.planning import Plan
from conversations.offline.profiles import Profile
from conversations.offline.transport import Response


@dataclass
class Chat:
    """Everything decided about one chat request before answering it."""

    body: dict
    model: str
    plan: Plan
    directives: directives.Directives
    profile: Profile
    stream: bool
    include_usage: bool
    rate: float
    anthropic: bool
    headers: dict[str, str]
    stamp: Callable[[str], str]  # the benchmark hook, identity otherwise
    on_complete: Callable[[], None]  # the answer was sent to the end (credits)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


async def pace(started: float, count: int, rate: float) -> None:
    # Always yield to the loop, even at rate 0, so one fast (or endless) answer cannot starve other connections.
    delay = started + count / rate - time.monotonic() if rate > 0 else 0
    await asyncio.sleep(max(0.0, delay))


async def complete(chat: Chat, response: Response) -> None:
    found, plan = chat.directives, chat.plan
    if found.has("slow_first_token"):
        await asyncio.sleep(found.number("slow_first_token", 1.0))
    text, thought = "".join(plan.content), "".join(plan.reasoning)
    if found.has("garbage"):
        await response.whole(200, wire.HTML_504, "text/html", chat.headers)
        return
    if chat.anthropic:
        blocks = ([{"type": "thinking", "thinking": thought}] if thought else []) + [{"type": "text", "text": text}]
        payload = {
            "id": "msg_" + chat.request_id,
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": blocks,
            "stop_reason": "end_turn" if plan.finish == "stop" else "max_tokens",
            "stop_sequence": None,
            "usage": plan.anthropic_usage(),
        }
    else:
        message = {"role": "assistant", "content": text}
        if thought:
            message["reasoning_content"] = thought
        payload = {
            "id": "chatcmpl-" + chat.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish}],
        }
        if chat.profile.usage_in_complete:
            payload["usage"] = plan.usage(chat.profile)
    body = wire.dumps(payload)
    if found.has("drop_midstream"):
        head = response._head(
            200, {**chat.headers, "Content-Type": "application/json", "Content-Length": str(len(body))}
        )
        response.writer.write(head + body[: len(body) // 2])
        await response.writer.drain()
        response.abort()
        return
    # Recorded before writing: a test may read the log as soon as its client has the answer.
    response.record.sent_text, response.record.sent_reasoning = text, thought
    response.record.completed = True
    chat.on_complete()
    await response.whole(200, body, "application/json", chat.headers)


async def _open_stream(chat: Chat, response: Response, found) -> bool:
    """The start every SSE answer shares, with its stream faults; False when a fault already ended it."""
    if found.has("split_utf8"):
        response.split_sizes = itertools.cycle([1, 2, 1, 3])
    await response.start_chunked(200, "text/event-stream; charset=utf-8", chat.headers)
    if found.has("slow_first_token"):
        await asyncio.sleep(found.number("slow_first_token", 1.0))
    if found.has("garbage"):
        await response.chunk(wire.GARBAGE)
        await response.end_chunked()
        return False
    return True


async def stream_openai(chat: Chat, response: Response) -> None:
    found, plan = chat.directives, chat.plan
    framer = wire.Framer(found.faults)
    base = {"id": "chatcmpl-" + chat.request_id, "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = chat.model

    def chunk(delta: dict | None = None, **choice) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": None, **choice}]}

    async def send(payload) -> None:
        await response.chunk(framer.event(payload))

    if not await _open_stream(chat, response, found):
        return
    await send(chunk({"role": "assistant", "content": ""}))
    if found.has("empty_choices"):
        await send({**base, "choices": []})
    started, sent = time.monotonic(), 0
    record = response.record
    if plan.reasoning:
        await send(chunk({"reasoning_content": ""}))  # thinking models open with an empty piece
    for piece in plan.reasoning:
        await send(chunk({"reasoning_content": piece}))
        record.sent_reasoning += piece
        sent += 1
        await pace(started, sent, chat.rate)
    content = plan.content
    fail_at = max(1, min(5, len(content) // 2))
    pieces = itertools.cycle(content or ["…"]) if found.has("endless") else iter(content)
    for index, piece in enumerate(pieces):
        if index == fail_at:
            if found.has("error_midstream"):
                error = {"message": "The engine failed while generating", "type": "server_error"}
                await send({"error": error})
                await response.end_chunked()
                return
            if found.has("drop_midstream"):
                response.abort()
                return
            if found.has("silence"):
                await asyncio.sleep(found.number("silence", 1.0))
        piece = chat.stamp(piece)
        await send(chunk({"content": piece}))
        record.sent_text += piece
        sent += 1
        if found.has("empty_choices") and index % 3 == 2:
            await send({**base, "choices": []})
        await pace(started, sent, chat.rate)
    usage = plan.usage(chat.profile)
    await send(chunk({}, finish_reason=plan.finish, usage=usage))
    if chat.include_usage:
        await send({**base, "choices": [], "usage": usage})
    record.completed = True  # before the last bytes: the client may check the log as soon as it has them
    chat.on_complete()
    if not found.has("no_done"):
        await send("[DONE]")
    await response.end_chunked()


async def stream_anthropic(chat: Chat, response: Response) -> None:
    found, plan = chat.directives, chat.plan
    framer = wire.Framer(found.faults)
    usage = plan.anthropic_usage()
    record = response.record

    async def send(kind: str, payload: dict) -> None:
        await response.chunk(framer.event({"type": kind, **payload}, event=kind))

    if not await _open_stream(chat, response, found):
        return
    message = {"id": "msg_" + chat.request_id, "type": "message", "role": "assistant", "model": chat.model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {**usage, "output_tokens": 1}}  # fmt: skip
    await send("message_start", {"message": message})
    await send("ping", {})
    started, sent, block = time.monotonic(), 0, 0
    if plan.reasoning:
        await send("content_block_start", {"index": block, "content_block": {"type": "thinking", "thinking": ""}})
        for piece in plan.reasoning:
            await send("content_block_delta", {"index": block, "delta": {"type": "thinking_delta", "thinking": piece}})
            record.sent_reasoning += piece
            sent += 1
            await pace(started, sent, chat.rate)
        await send("content_block_stop", {"index": block})
        block += 1
    await send("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}})
    content = plan.content
    fail_at = max(1, min(5, len(content) // 2))
    pieces = itertools.cycle(content or ["…"]) if found.has("endless") else iter(content)
    for index, piece in enumerate(pieces):
        if index == fail_at:
            if found.has("error_midstream"):
                await send("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                await response.end_chunked()
                return
            if found.has("drop_midstream"):
                response.abort()
                return
            if found.has("silence"):
                await asyncio.sleep(found.number("silence", 1.0))
        piece = chat.stamp(piece)
        await send("content_block_delta", {"index": block, "delta": {"type": "text_delta", "text": piece}})
        record.sent_text += piece
        sent += 1
        await pace(started, sent, chat.rate)
    await send("content_block_stop", {"index": block})
    stop_reason = "end_turn" if plan.finish == "stop" else "max_tokens"
    await send(
        "message_delta",
        {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
         "usage": {"output_tokens": usage["output_tokens"]}},
    )  # fmt: skip
    record.completed = True  # before the last bytes, as above
    chat.on_complete()
    if not found.has("no_done"):
        await send("message_stop", {})
    await response.end_chunked()
