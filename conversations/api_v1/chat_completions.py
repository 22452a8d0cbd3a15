"""POST /v1/chat/completions: OpenAI's Chat Completions shape, streamed (SSE) or not (seed 003)."""

from __future__ import annotations

import time
import uuid

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from conversations.api_v1 import common
from conversations.api_v1.common import bad_request
from conversations.kimi import errors as kimi_errors
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta
from conversations.kimi.params import ChatRequest

ROLES = ("system", "user", "assistant")


def chat_request(body: dict) -> tuple[ChatRequest, bool, bool]:
    """The upstream request, whether to stream, whether to send usage in the last chunk."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(gettext("'model' is required."), "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(gettext("'messages' must be a non-empty list."), "messages")
    sent = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(gettext("%(param)s needs a role of system, user or assistant.") % {"param": param}, param)
        sent.append({"role": message["role"], "content": common.text_of(message.get("content"), param + ".content")})
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(gettext("'stream' must be true or false."), "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request(gettext("'stream_options' must be an object."), "stream_options")
    max_tokens = common.number(body, "max_completion_tokens", integer=True)
    if max_tokens is None:
        max_tokens = common.number(body, "max_tokens", integer=True)
    extra = {}
    for name in ("frequency_penalty", "presence_penalty"):
        value = common.number(body, name)
        if value is not None:
            if not -2 <= value <= 2:
                raise bad_request(gettext("'%(param)s' must be between -2 and 2.") % {"param": name}, name)
            extra[name] = value
    if (stops := common.stop_list(body.get("stop"), "stop")) is not None:
        extra["stop"] = stops
    n = common.number(body, "n", integer=True)
    request = ChatRequest(
        model=model,
        messages=sent,
        temperature=common.number(body, "temperature"),
        top_p=common.number(body, "top_p"),
        max_tokens=max_tokens,
        n=1 if n is None else n,
        extra=extra,
    )
    common.thinking_options(body, request)
    if n is not None and n < 1:
        raise bad_request(gettext("The number of answers (n) must be a whole number of at least 1."), "n")
    return request, stream, bool(options.get("include_usage"))


def _usage(run: common.Run) -> dict:
    usage = run.total_usage()
    body = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return body


@csrf_exempt
@login_not_required
@require_POST
async def chat_completions(request):
    accepted = await common.accept(request, "openai", chat_request)
    if isinstance(accepted, HttpResponse):
        return accepted
    run = accepted.run
    ident = f"chatcmpl-{uuid.uuid4()}"
    created = int(time.time())
    if accepted.stream:
        response = common.RunResponse(run, _stream(run, ident, created, accepted.include_usage))
        return common.with_headers(response, accepted.limits)
    if failed := await common.run_whole(accepted, "openai"):
        return failed
    message = {"role": "assistant", "content": "".join(run.text)}
    if run.reasoning:
        message["reasoning_content"] = "".join(run.reasoning)
    body = {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": run.request.model,
        "choices": [{"index": 0, "message": message, "finish_reason": run.finish_reason or "stop"}],
        "usage": _usage(run),
    }
    return await common.answered(accepted, body)


async def _stream(run: common.Run, ident: str, created: int, include_usage: bool):
    def chunk(delta: dict, finish_reason=None) -> bytes:
        return common.sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": run.request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in run.events():
                if isinstance(event, ContentDelta):
                    yield chunk({"content": event.text})
                elif isinstance(event, ReasoningDelta):
                    yield chunk({"reasoning_content": event.text})
                elif isinstance(event, Finish):
                    yield chunk({}, event.reason or "stop")
        except kimi_errors.KimiError as exc:
            await run.finish()
            error = common.upstream_error(exc)
            yield common.sse({"error": {"message": error.message, "type": error.type, "code": error.code}})
            return
        if not run.finish_reason:
            yield chunk({}, "stop")
        await run.finish()
        if include_usage:
            yield common.sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": run.request.model,
                    "choices": [],
                    "usage": _usage(run),
                }
            )
        yield b"data: [DONE]\n\n"
    finally:
        await run.finish()  # a client that left: settled for what was generated
