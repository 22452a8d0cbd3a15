"""POST /v1/messages: Anthropic's Messages shape, streamed as Anthropic streams it (message_start,
content_block_start/delta/stop, message_delta, message_stop) or not (seed 003)."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from conversations.api_v1 import common
from conversations.api_v1.common import ApiError, bad_request
from conversations.kimi import errors as kimi_errors
from conversations.kimi.events import ContentDelta, ReasoningDelta
from conversations.kimi.params import ChatRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def chat_request(body: dict) -> tuple[ChatRequest, bool, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(gettext("'model' is required."), "model")
    max_tokens = common.number(body, "max_tokens", integer=True)
    if max_tokens is None:
        raise bad_request(gettext("'max_tokens' is required."), "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(gettext("'messages' must be a non-empty list."), "messages")
    sent = []
    system = body.get("system")
    if system is not None:
        sent.append({"role": "system", "content": common.text_of(system, "system")})
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise bad_request(gettext("%(param)s needs a role of user or assistant.") % {"param": param}, param)
        sent.append({"role": message["role"], "content": common.text_of(message.get("content"), param + ".content")})
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(gettext("'stream' must be true or false."), "stream")
    extra = {}
    if (stops := common.stop_list(body.get("stop_sequences"), "stop_sequences")) is not None:
        extra["stop"] = stops
    request = ChatRequest(
        model=model,
        messages=sent,
        temperature=common.number(body, "temperature"),
        top_p=common.number(body, "top_p"),
        max_tokens=max_tokens,
        extra=extra,
    )
    common.thinking_options(body, request)
    return request, stream, False


def _usage(run: common.Run) -> dict:
    usage = run.total_usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _content(run: common.Run) -> list[dict]:
    content = []
    if run.reasoning:
        content.append({"type": "thinking", "thinking": "".join(run.reasoning), "signature": ""})
    content.append({"type": "text", "text": "".join(run.text)})
    return content


@csrf_exempt
@login_not_required
@require_POST
async def messages(request):
    accepted = await common.accept(request, "anthropic", chat_request)
    if isinstance(accepted, HttpResponse):
        return accepted
    run = accepted.run
    ident = f"msg_{uuid.uuid4().hex}"
    if accepted.stream:
        response = common.RunResponse(run, _stream(run, ident, accepted.prompt_tokens))
        return common.with_headers(response, accepted.limits)
    if failed := await common.run_whole(accepted, "anthropic"):
        return failed
    body = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "content": _content(run),
        "model": run.request.model,
        "stop_reason": STOP_REASONS.get(run.finish_reason or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(run),
    }
    return await common.answered(accepted, body)


async def _stream(run: common.Run, ident: str, prompt_tokens: int):
    def event(name: str, data: dict) -> bytes:
        return common.sse({"type": name, **data}, event=name)

    block = {"index": -1, "type": None}

    def switch_to(kind: str):
        """Close the open content block and open one of ``kind``."""
        out = []
        if block["type"] is not None:
            out.append(event("content_block_stop", {"index": block["index"]}))
        block["index"] += 1
        block["type"] = kind
        start = (
            {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
        )
        out.append(event("content_block_start", {"index": block["index"], "content_block": start}))
        return out

    try:
        yield event(
            "message_start",
            {
                "message": {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": run.request.model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
                }
            },
        )
        yield event("ping", {})
        try:
            async for item in run.events():
                if isinstance(item, ReasoningDelta) and item.text:
                    if block["type"] != "thinking":
                        for part in switch_to("thinking"):
                            yield part
                    yield event(
                        "content_block_delta",
                        {"index": block["index"], "delta": {"type": "thinking_delta", "thinking": item.text}},
                    )
                elif isinstance(item, ContentDelta) and item.text:
                    if block["type"] != "text":
                        for part in switch_to("text"):
                            yield part
                    yield event(
                        "content_block_delta",
                        {"index": block["index"], "delta": {"type": "text_delta", "text": item.text}},
                    )
        except kimi_errors.KimiError as exc:
            await run.finish()
            error = common.upstream_error(exc)
            yield event(
                "error",
                {"error": {"type": ApiError.ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message}},
            )
            return
        if block["type"] is None:
            for part in switch_to("text"):
                yield part
        yield event("content_block_stop", {"index": block["index"]})
        await run.finish()
        yield event(
            "message_delta",
            {
                "delta": {
                    "stop_reason": STOP_REASONS.get(run.finish_reason or "stop", "end_turn"),
                    "stop_sequence": None,
                },
                "usage": _usage(run),
            },
        )
        yield event("message_stop", {})
    finally:
        await run.finish()
