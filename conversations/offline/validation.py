"""The checks the real APIs make on a chat request, so a client bug shows up offline as it would online.

Each refusal has the provider's status, error ``type`` and message (/work/shared/kimi-api-notes.md §3, §6, §9, §15;
a message marked [?] is this server's wording where the provider's is unknown). The first failed check answers.
"""

from __future__ import annotations

import re

from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.offline import wire
from conversations.offline.catalogue import spec_for, thinks
from conversations.offline.profiles import Profile

NEAR_ZERO = 0.01
ANTHROPIC_THINKING_MIN = 1024


class Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str):
        self.status, self.kind, self.message = status, kind, message
        super().__init__(message)


def _bad(message: str) -> Refusal:
    return Refusal(400, "invalid_request_error", message)


def prompt_tokens(body: dict, messages: list[dict], anthropic: bool) -> int:
    tokens = estimate_messages_locally(messages)
    if anthropic and isinstance(body.get("system"), str):
        tokens += estimate_tokens_locally(body["system"])
    return tokens


def requested_output(body: dict, profile: Profile, anthropic: bool) -> int | None:
    """The output limit the request set, read from the fields this provider reads (others are ignored)."""
    fields = ("max_tokens",) if anthropic else profile.output_fields
    for name in fields:
        value = body.get(name)
        if value is not None:
            return value
    return None


def validate(body: dict, profile: Profile, anthropic: bool) -> wire.ErrorReply | None:
    try:
        _check(body, profile, anthropic)
    except Refusal as refusal:
        if refusal.status == 404 and not anthropic:
            return wire.openai_error(404, refusal.kind, refusal.message)
        if anthropic:
            kind = {"resource_not_found_error": "not_found_error"}.get(refusal.kind, refusal.kind)
            return wire.anthropic_error(refusal.status, kind, refusal.message)
        return wire.openai_error(refusal.status, refusal.kind, refusal.message)
    return None


def _check(body: dict, profile: Profile, anthropic: bool) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required")
    if model not in profile.models:
        raise Refusal(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad("messages must not be empty")
    spec = spec_for(model)
    if anthropic:
        _check_anthropic(body, model)
    else:
        _check_sampling(body, model, spec, profile)
        _check_thinking(body, model, spec)
        _check_messages(body, messages, model, spec, profile)
    _check_output(body, model, spec, profile, anthropic)
    _check_length(body, messages, model, profile, anthropic)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_sampling(body: dict, model: str, spec, profile: Profile) -> None:
    for name in spec.refused_params:
        if name in body and body[name] is not None:
            fixed = {"temperature": 1, "top_p": 0.95, "n": 1}.get(name, 0)
            # Absent from the model's schema [doc: params]; worded like the fixed-value refusal [seen].
            raise _bad(f"invalid {name}: only {fixed:g} is allowed for this model")
    temperature = body.get("temperature")
    if temperature is not None:
        if not _number(temperature) or not 0 <= temperature <= profile.temperature_max:
            raise _bad(f"Invalid request: temperature must be in [0, {profile.temperature_max:g}]")
        if spec.fixed_temperature:
            fixed = spec.fixed_temperature[0 if thinks(model, body) else 1]
            if abs(temperature - fixed) > 1e-9:
                raise _bad(f"invalid temperature: only {fixed:g} is allowed for this model")
    top_p = body.get("top_p")
    if top_p is not None:
        if not _number(top_p) or not 0 <= top_p <= 1:
            raise _bad("Invalid request: top_p must be in [0, 1]")
        if spec.fixed_top_p is not None and abs(top_p - spec.fixed_top_p) > 1e-9:
            raise _bad(f"invalid top_p: only {spec.fixed_top_p:g} is allowed for this model")
    n = body.get("n")
    if n is not None:
        n_max = spec.fixed_n or profile.n_max or spec.n_max
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= n_max:
            if spec.fixed_n is not None:
                raise _bad(f"invalid n: only {spec.fixed_n} is allowed for this model")
            raise _bad(f"Invalid request: n must be in [1, {n_max}]")  # [?]
        effective = temperature if temperature is not None else spec.default_temperature
        if n > 1 and effective < NEAR_ZERO:
            raise _bad("Invalid request: n > 1 requires temperature > 0")  # [doc: S004]
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > profile.stop_max:
        raise _bad(f"Invalid request: stop must have at most {profile.stop_max} sequences")  # [?]
    effort = body.get("reasoning_effort")
    if effort is not None and not profile.gateway:
        if not spec.reasoning_efforts:
            raise _bad("invalid reasoning_effort: reasoning_effort is not supported for this model")  # [?]
        if effort not in spec.reasoning_efforts:
            raise _bad(f"invalid reasoning_effort: must be one of {', '.join(spec.reasoning_efforts)}")  # [?]


def _check_thinking(body: dict, model: str, spec) -> None:
    if "thinking" not in body or body["thinking"] is None:
        return
    thinking = body["thinking"]
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    keep = thinking.get("keep") if isinstance(thinking, dict) else None
    if spec.thinking == "none":
        raise _bad("invalid thinking: this model does not support thinking")  # [?]
    if spec.thinking == "always":
        raise _bad("invalid thinking: this model always thinks")  # no field in its schema [doc: spec, thinking]
    if spec.thinking == "enabled_keep_all":
        if kind == "enabled" and keep in (None, "all"):
            return  # spec: keep omitted/null/"all" all mean "all"
        raise _bad('invalid thinking: only {"type": "enabled", "keep": "all"} is allowed for this model')
    if kind not in ("enabled", "disabled"):
        raise _bad("invalid thinking: type must be enabled or disabled")
    if keep is not None and (not spec.thinking_keep or keep != "all"):
        raise _bad("invalid thinking: keep must be null or all")  # k2.5 has no keep [doc: spec]


def _check_messages(body: dict, messages: list[dict], model: str, spec, profile: Profile) -> None:
    last = len(messages) - 1
    for index, message in enumerate(messages):
        if message.get("partial"):
            if index != last or message.get("role") != "assistant":
                raise _bad("Invalid request: partial is only allowed on the last assistant message")  # [?]
            if not profile.partial:
                raise _bad("Invalid request: partial mode is not supported")  # [?]
            response_format = body.get("response_format")
            if isinstance(response_format, dict) and response_format.get("type") == "json_object":
                raise _bad("Invalid request: partial mode is not supported with json_object")  # [doc: partial]
    for message in messages:
        if isinstance(message.get("content"), list):
            _check_parts(message["content"], model, spec)
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    preserved = spec.preserved_thinking or (
        spec.thinking_keep and thinks(model, body) and thinking.get("keep") == "all"
    )
    if not preserved:
        return
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or (index == last and message.get("partial")):
            continue
        if not isinstance(message.get("reasoning_content"), str):
            what = "assistant tool call message" if message.get("tool_calls") else "assistant message"
            raise _bad(f"thinking is enabled but reasoning_content is missing in {what} at index {index}")  # kc-err


_DATA_URL = re.compile(r"data:image/\.?(png|jpe?g|webp|gif);base64,[A-Za-z0-9+/]+={0,2}\Z")


def _check_parts(parts: list, model: str, spec) -> None:
    """Content parts [doc: spec]: images only for models that take them, as a data URL or ms://<file id>."""
    for part in parts:
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "video_url"):
            raise _bad("Invalid request: unknown content part type")  # [?]
        if part["type"] != "image_url":
            continue
        if not spec.image_in:
            raise _bad(f"Invalid request: model {model} does not support image input")  # [?]
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        # The official sample yields "image/.png" [doc: vision]: tolerated.
        if not isinstance(url, str) or not (url.startswith("ms://") or _DATA_URL.match(url)):
            raise _bad("unsupported image url")  # [doc: kc-err]


def _check_anthropic(body: dict, model: str) -> None:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise _bad("max_tokens is required")
    temperature = body.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 1):
        raise _bad("temperature: must be in [0, 1]")  # S003: 0-1 on /messages
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and len(stops) > 4:
        raise _bad("stop_sequences: at most 4")  # S003
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < ANTHROPIC_THINKING_MIN:
            raise _bad(f"thinking.budget_tokens: must be at least {ANTHROPIC_THINKING_MIN}")
        if budget >= max_tokens:
            raise _bad("max_tokens must be greater than thinking.budget_tokens")


def _check_output(body: dict, model: str, spec, profile: Profile, anthropic: bool) -> None:
    value = requested_output(body, profile, anthropic)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad("Invalid request: max_tokens must be a positive integer")  # [?]
    if spec.max_output and value > spec.max_output:
        raise _bad(f"Invalid request: max_completion_tokens must be at most {spec.max_output}")  # [?]


def _check_length(body: dict, messages: list[dict], model: str, profile: Profile, anthropic: bool) -> None:
    window = profile.window(model)
    prompt = prompt_tokens(body, messages, anthropic)
    if prompt > window:
        raise _bad("Input token length too long")  # [doc: errors]
    requested = requested_output(body, profile, anthropic)
    if isinstance(requested, int) and prompt + requested > window:
        raise _bad(f"Invalid request: Your request exceeded model token limit : {window}")  # [doc: errors]
