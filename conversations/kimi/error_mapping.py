"""Turn whatever a provider sent on failure into one ``KimiError`` subclass: the only place that reads error bodies.

Moonshot, Ace Data Cloud and kimi-k2.ai disagree on shapes (``type`` vs ``code``, ``trace_id``, HTML gateway pages,
empty bodies) and Moonshot even bills with 429, so the status alone is not enough: the provider's type/code words
are checked first, then the status.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import orjson

from conversations.kimi import errors

# Provider words (type, code) → exception, first match wins. Quota before rate limit: Moonshot reports an exhausted
# account as a 429 ``exceeded_current_quota_error``, which must not be retried.
_WORD_RULES: tuple[tuple[tuple[str, ...], type[errors.KimiError]], ...] = (
    (
        ("exceeded_current_quota", "insufficient_credits", "insufficient_quota", "insufficient_balance", "used_up"),
        errors.PermissionDenied,
    ),
    (("permission", "forbidden"), errors.AccessDenied),
    (
        ("authentication", "invalid_api_key", "incorrect_api_key", "invalid_token", "unauthorized"),
        errors.AuthenticationFailed,
    ),
    (("model_not_found",), errors.ModelNotFound),
    (("resource_not_found", "not_found"), errors.EndpointNotFound),  # a model named in the message: ModelNotFound
    (("content_filter", "high_risk", "moderation"), errors.ContentFiltered),
    (("context_length", "context_too_long", "request_too_large"), errors.ContextTooLong),
    (("overloaded",), errors.Overloaded),
    (("rate_limit", "too_many_requests"), errors.RateLimited),
    (("server_error", "server_unavailable", "api_error", "internal_error", "service_unavailable"), errors.ServerError),
    (("timeout",), errors.Timeout),
    (("invalid_request", "token_mismatched", "api_not_implemented", "bad_request"), errors.BadRequest),
)

_STATUS_RULES: dict[int, type[errors.KimiError]] = {
    400: errors.BadRequest,
    401: errors.AuthenticationFailed,
    402: errors.PermissionDenied,
    403: errors.AccessDenied,
    404: errors.EndpointNotFound,
    408: errors.Timeout,
    413: errors.ContextTooLong,
    422: errors.BadRequest,
    429: errors.RateLimited,
    504: errors.Timeout,
    529: errors.Overloaded,
}

# Moonshot words a too-long conversation as a plain invalid_request_error: "Input token length too long" (the prompt
# alone) or "exceeded model token limit" (prompt + output budget) [notes §3, §15].
_CONTEXT_MESSAGE = re.compile(
    r"token limit|token length too long|context length|context window|too many tokens|maximum context", re.I
)
# Moonshot's 404 for an unknown model: "Not found the model X or Permission denied". Any other 404 is an address
# that does not exist, which picking another model cannot fix.
_MODEL_MESSAGE = re.compile(r"\bmodel\b", re.I)
# Ace Data and the help pages use 403 for an empty balance too [notes §15].
_QUOTA_MESSAGE = re.compile(r"balance|quota|credit|recharge|suspended", re.I)
REQUEST_ID_HEADERS = ("msh-request-id", "x-msh-trace-id", "x-trace-id", "x-request-id")
_TRY_AGAIN = re.compile(r"(?:try again|retry) (?:after|in) (\d+(?:\.\d+)?) ?(ms|milliseconds?|s|sec|seconds?)?", re.I)
# Provider messages sometimes quote the key they rejected; anything key-shaped is cut before it reaches a log.
_KEY_LIKE = re.compile(r"\b(sk|ak|key)-[A-Za-z0-9_\-*]{6,}", re.I)


def redact(text: str, secret: str | None = None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


def parse_retry_after(headers: Mapping[str, str] | None, message: str = "") -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP date) or a "try again after N seconds" message."""
    value = _header(headers, "retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if _looks_like_date(value) else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    match = _TRY_AGAIN.search(message or "")
    if match:
        seconds = float(match.group(1))
        unit = (match.group(2) or "s").lower()
        return seconds / 1000 if unit.startswith("m") else seconds
    return _reset_wait(_header(headers, "x-ratelimit-reset"))


def _reset_wait(value: str) -> float | None:
    """``X-RateLimit-Reset``: unix seconds on kimi-k2.ai [doc: S003]; Moonshot's format is undocumented, so a small
    number is read as seconds from now."""
    try:
        reset = float(value)
    except ValueError:
        return None
    if reset > 1_000_000_000:
        return max(0.0, reset - time.time())
    return max(0.0, reset)


def reset_moment(value: str, received: datetime) -> datetime | None:
    """When an ``X-RateLimit-Reset`` header that came at ``received`` says the window resets, read as _reset_wait
    reads it (unix seconds, or a small number of seconds from then); None when it is not a number."""
    try:
        reset = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(reset):
        return None
    if reset > 1_000_000_000:
        return datetime.fromtimestamp(reset, tz=UTC)
    return received + timedelta(seconds=max(0.0, reset))


def error_from_response(
    status: int | None,
    body: bytes | str | Mapping | None,
    headers: Mapping[str, str] | None = None,
) -> errors.KimiError:
    """Map an error answer to an exception. ``status`` is None for an error event inside a 200 stream."""
    payload = _decode(body)
    kind, code, message, trace_id = _fields(payload)
    words = f"{kind} {code}".lower()
    exc_class = _classify(status, words, message)
    request_id = request_id_from(headers) or trace_id
    detail_parts = [p for p in (str(status) if status else "", kind, code) if p]
    detail = " ".join(detail_parts)
    if message:
        detail = f"{detail}: {message[:300]}" if detail else message[:300]
    elif isinstance(body, (bytes, str)) and body and not payload:
        detail = f"{detail}: non-JSON body" if detail else "non-JSON body"
    retry_after = parse_retry_after(headers, message) if exc_class.retryable else None
    return exc_class(status=status, request_id=request_id, retry_after=retry_after, detail=redact(detail))


def request_id_from(headers: Mapping[str, str] | None) -> str:
    for name in REQUEST_ID_HEADERS:
        value = _header(headers, name)
        if value:
            return value
    return ""


def _classify(status: int | None, words: str, message: str) -> type[errors.KimiError]:
    for needles, exc_class in _WORD_RULES:
        if any(needle in words for needle in needles):
            return _refine(exc_class, message)
    if status in _STATUS_RULES:
        return _refine(_STATUS_RULES[status], message)
    if status is None or status >= 500:
        return errors.ServerError  # an unexplained failure mid-stream is the provider's trouble
    if 400 <= status < 500:
        return errors.BadRequest
    return errors.KimiError


def _refine(exc_class: type[errors.KimiError], message: str) -> type[errors.KimiError]:
    """The message tells apart what one type or status covers."""
    if exc_class is errors.BadRequest and _CONTEXT_MESSAGE.search(message):
        return errors.ContextTooLong
    if exc_class is errors.EndpointNotFound and _MODEL_MESSAGE.search(message):
        return errors.ModelNotFound
    if exc_class is errors.AccessDenied and _QUOTA_MESSAGE.search(message):
        return errors.PermissionDenied
    return exc_class


def _decode(body: bytes | str | Mapping | None) -> dict:
    if isinstance(body, Mapping):
        return dict(body)
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _fields(payload: dict) -> tuple[str, str, str, str]:
    """(type, code, message, trace id) from OpenAI-, Ace Data- or Anthropic-shaped bodies."""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return "", "", error, str(payload.get("trace_id") or "")
    if not isinstance(error, dict):
        error = {}
    kind = str(error.get("type") or "")
    if kind == "error":  # Anthropic's envelope {"type": "error", "error": {...}} seen without unwrapping
        kind = ""
    code = error.get("code")
    code = "" if code is None else str(code)
    message = str(error.get("message") or payload.get("message") or "")
    trace_id = str(payload.get("trace_id") or error.get("trace_id") or "")
    return kind, code, message, trace_id


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    if not headers:
        return ""
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; httpx.Headers is not
        lowered = {str(k).lower(): v for k, v in headers.items()}
        value = lowered.get(name)
    return str(value or "")


def _looks_like_date(value: str) -> bool:
    return any(ch.isalpha() for ch in value)
