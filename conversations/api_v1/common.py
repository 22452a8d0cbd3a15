"""What every /v1/ endpoint shares: the key from the request, errors in each format's shape, the rate-limit and
credit headers, and the answer's run against the upstream (settled exactly once, even when the client leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import translation
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_variables

from conversations.api_v1.ready_together import ready_together
from conversations.kimi import errors as kimi_errors
from conversations.kimi.configured import get_client
from conversations.kimi.events import ContentDelta, Finish, Pieces, ReasoningDelta, Usage
from conversations.kimi.params import ChatRequest, output_budget, resolve_params
from conversations.kimi.tokens import estimate_messages_locally, estimate_tokens_locally
from conversations.models import ApiKey
from conversations.services import batching, db_threads
from conversations.services.accounts import approval, model_access
from conversations.services.accounts.client_address import request_client_address
from conversations.services.apikeys import bulk_admit, keys, metering
from conversations.services.billing import credits
from conversations.services.billing.ratelimit import RateLimited

logger = logging.getLogger(__name__)
PARAMETERS = ("max_tokens", "temperature", "top_p", "reasoning_effort", "thinking", "messages", "model")
_finishing: set[asyncio.Task] = set()  # settlements that outlive a cancelled request (kept from the GC)


class ApiError(Exception):
    """A refusal with the status, OpenAI ``type`` and ``code`` of seed 003, and the Anthropic error type."""

    ANTHROPIC_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        503: "overloaded_error",
    }

    def __init__(self, status: int, type_: str, code: str, message: str, *, param=None, retry_after=None, headers=None):
        super().__init__(message)
        self.status, self.type, self.code, self.message = status, type_, code, message
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}

    def response(self, style: str) -> HttpResponse:
        if style == "anthropic":
            body = {
                "type": "error",
                "error": {"type": self.ANTHROPIC_TYPES.get(self.status, "api_error"), "message": self.message},
            }
        else:
            body = {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
        response = json_response(body, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        if self.retry_after is not None:
            response["Retry-After"] = str(int(self.retry_after))
        return response


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, "invalid_request_error", code, message, param=param)


def json_response(body, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def parse_body(request) -> dict:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise bad_request(gettext("The request body is not valid JSON.")) from None
    if not isinstance(body, dict):
        raise bad_request(gettext("The request body must be a JSON object."))
    return body


def secret_from(request) -> str:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``: both endpoints take both."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


@sensitive_variables("secret")
def _authenticate(secret: str, ip: str, with_limits: bool):
    key = keys.authenticate(secret, ip)
    if approval.is_waiting(key.owner_id):
        raise ApiError(403, "permission_error", approval.WAITING_CODE, approval.waiting_message())
    return key, key.owner, metering.limits(key.owner) if with_limits else None


def _outcome(language: str | None, func, *args, **kwargs):
    """``func``'s result, or the exception it raised, for one request of a batch (its messages in its language):
    the request that waits for it raises it (``services/batching.py``)."""
    try:
        with translation.override(language):
            return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - raised by the request that waits for it
        return exc


@sensitive_variables("waiting")
def _authenticate_many(waiting: list[tuple]) -> list:
    """The key checks of the requests that arrived together (``(secret, ip, with_limits, language)`` each), in one
    trip: one query for their keys, one for their owners' approval, one for their balances; each outcome is
    ``_authenticate``'s (key, user, limits) or the exception it raises (in the request's language)."""
    if len(waiting) == 1:
        secret, ip, with_limits, language = waiting[0]
        return [_outcome(language, _authenticate, secret, ip, with_limits)]
    found = keys.authenticate_many([(secret, ip, language) for secret, ip, _with_limits, language in waiting])
    owners = {key.owner_id for key in found if isinstance(key, ApiKey)}
    waiting_for_approval = approval.waiting_among(owners)
    balances = credits.balances_of(owners - waiting_for_approval)
    outcomes = []
    for (_secret, _ip, with_limits, language), key in zip(waiting, found, strict=True):
        if not isinstance(key, ApiKey):
            outcomes.append(key)
        elif key.owner_id in waiting_for_approval:
            with translation.override(language):
                outcomes.append(ApiError(403, "permission_error", approval.WAITING_CODE, approval.waiting_message()))
        else:
            lim = metering.limits(key.owner, balances[key.owner_id]) if with_limits else None
            outcomes.append((key, key.owner, lim))
    return outcomes


async def _authenticate_batch(waiting: list[tuple]) -> list:
    return await db_threads.off_the_loop(_authenticate_many, waiting)


# The key checks of the requests that arrive while a batch of them runs wait and go together (services/batching.py).
_authentications = batching.Batches(_authenticate_batch, lambda: settings.KIMICHAT_SEND_BATCH)


@sensitive_variables("secret")
async def authenticate(request, *, with_limits: bool = False):
    """(key, user, limits) of the request's key, or ApiError 401 (429 for a throttled address). Never echoes the key.
    ``with_limits``: the rate-limit figures of the response's headers, read in the same trip (else None)."""
    secret = secret_from(request)
    if not secret:
        raise ApiError(
            401,
            "invalid_request_error",
            "invalid_api_key",
            gettext("No API key provided. Send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."),
        )
    try:
        return await _authentications.submit(
            (secret, request_client_address(request), with_limits, translation.get_language())
        )
    except keys.KeyRefused as exc:
        if exc.code == "throttled":
            raise ApiError(429, "rate_limit_error", "rate_limit_exceeded", exc.message, retry_after=exc.retry_after)
        raise ApiError(401, "invalid_request_error", exc.code, exc.message) from None


async def limits(user) -> metering.Limits:
    return await db_threads.on_database_thread(metering.limits)(user)


def with_headers(response: HttpResponse, lim: metering.Limits | None) -> HttpResponse:
    if lim is not None:
        for name, value in lim.headers().items():
            response[name] = value
    return response


# --- the request sent upstream ------------------------------------------------------------------------------------


def text_of(content, param: str) -> str:
    """A message's content: a string, or a list of text parts (OpenAI's and Anthropic's shapes alike)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise bad_request(gettext("Only text content is accepted in %(param)s.") % {"param": param}, param)
        return "".join(parts)
    raise bad_request(gettext("%(param)s must be a string or a list of text parts.") % {"param": param}, param)


def number(body: dict, name: str, *, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = gettext("a whole number") if integer else gettext("a number")
        raise bad_request(gettext("'%(param)s' must be %(what)s.") % {"param": name, "what": what}, name)
    return value


def stop_list(value, name: str) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise bad_request(gettext("'%(param)s' must be a string or up to 4 strings.") % {"param": name}, name)
    return stops or None


def thinking_options(body: dict, request: ChatRequest) -> None:
    """``reasoning_effort`` (kimi-k3) and ``thinking`` ({"type": "enabled" | "disabled"}, Moonshot's and Anthropic's
    shape) onto the request; the model's rules (``resolve_params``) then accept or refuse them as the chat's."""
    effort = body.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise bad_request(gettext("'reasoning_effort' must be a string."), "reasoning_effort")
    request.reasoning_effort = effort
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled"):
            raise bad_request(gettext('\'thinking.type\' must be "enabled" or "disabled".'), "thinking")
        request.thinking = kind == "enabled"


def _param_named(message: str) -> str | None:
    lowered = message.lower()
    if "(n)" in lowered:
        return "n"
    return next((name for name in PARAMETERS if name.replace("_", " ") in lowered or name in lowered), None)


@dataclass
class Prepared:
    request: ChatRequest
    prompt_tokens: int


async def prepare(request: ChatRequest, max_tokens_param: str) -> Prepared:
    """Validate against the model's rules (as the chat does) and set the output budget the chat would."""
    client = get_client()
    if not isinstance(request.model, str) or not request.model:
        raise bad_request(gettext("'model' is required."), "model")
    if request.model not in await client.list_models():
        raise bad_request(
            gettext("The model %(model)r does not exist. GET /v1/models lists the models.")
            % {"model": request.model[:100]},
            "model",
            code="model_not_found",
        )
    try:
        params = resolve_params(request, client.provider)
        if params.n:
            raise kimi_errors.InvalidParameter(gettext("The number of answers (n) must be 1 here."))
        prompt_tokens = estimate_messages_locally(request.messages)
        request.max_tokens = output_budget(request.model, request.max_tokens, prompt_tokens, client.provider)
    except kimi_errors.ContextTooLong as exc:
        raise bad_request(exc.message, "messages", code="context_length_exceeded") from None
    except kimi_errors.InvalidParameter as exc:
        param = _param_named(exc.message)
        if param == "max_tokens":
            param = max_tokens_param
        raise bad_request(exc.message, param) from None
    return Prepared(request=request, prompt_tokens=prompt_tokens)


def _admit(key_id, user, prepared: Prepared, counted: bool = False):
    """One request's admission (``counted``: its rate limit was counted already, by ``bulk_admit``)."""
    if not model_access.is_allowed(user, prepared.request.model):  # the allow-lists of the user's groups
        refusal = model_access.refusal(prepared.request.model)
        raise ApiError(403, "invalid_request_error", model_access.CODE, refusal, param="model")
    reservation = metering.admit(
        key_id,
        user,
        model=prepared.request.model,
        prompt_tokens=prepared.prompt_tokens,
        max_completion_tokens=prepared.request.max_tokens,
        counted=counted,
    )
    return reservation, metering.limits(user)


def _admit_many(waiting: list[tuple]) -> list:
    """The admissions of the requests that waited together (``(key, user, prepared, language)`` each), in one trip:
    those ``bulk_admit`` accepts in one transaction, the rest one by one (``_admit``, in the request's language);
    each outcome is ``(reservation, limits)`` or the exception that request raises."""
    requests = [
        bulk_admit.Request(key, user, prepared.request.model, prepared.prompt_tokens, prepared.request.max_tokens)
        for key, user, prepared, _language in waiting
    ]
    outcomes = bulk_admit.admit_many(requests)
    results = []
    for (key, user, prepared, language), outcome in zip(waiting, outcomes, strict=True):
        if isinstance(outcome, bulk_admit.Admitted):
            results.append((outcome.reservation, metering.limits(user, outcome.balance)))
        elif isinstance(outcome, bulk_admit.Alone):
            results.append(_outcome(language, _admit, key.pk, user, prepared, counted=outcome.counted))
        else:
            results.append(outcome)
    return results


async def _admit_batch(waiting: list[tuple]) -> list:
    # Off the loop as the websocket's sends go: SQLite's one database thread, or PostgreSQL's send threads. Not a
    # request's own thread: the batch outlives the request that happened to start it (services/batching.py).
    return await db_threads.off_the_loop(_admit_many, waiting)


# The requests that arrive while a batch is admitted wait for it and go together (services/batching.py).
_admissions = batching.Batches(_admit_batch, lambda: settings.KIMICHAT_SEND_BATCH)


def _finish_many(endings: list[metering.Ending]) -> list:
    """The settlements of the requests that ended together, in one trip and one transaction; if that transaction
    fails, each alone (``metering.finish``), so one bad row costs only its own request. Outcomes as ``finish``'s,
    or the exception a request's settlement raised."""
    try:
        return metering.finish_many(endings)
    except Exception:
        if len(endings) > 1:
            logger.exception("A batch of %d API settlements failed; settling them one by one", len(endings))
        else:
            raise
    outcomes = []
    for ending in endings:
        try:
            outcomes.append(
                metering.finish(
                    ending.reservation,
                    usage=ending.usage,
                    estimated=ending.estimated,
                    generated=ending.generated,
                    note=ending.note,
                )
            )
        except Exception as exc:  # noqa: BLE001 - that request's own failure, logged by its waiter
            outcomes.append(exc)
    return outcomes


async def _finish_batch(endings: list[metering.Ending]) -> list:
    return await db_threads.off_the_loop(_finish_many, endings)


# The requests that end while a batch of settlements runs wait for it and are settled together (services/batching.py).
_settlements = batching.Batches(_finish_batch, lambda: settings.KIMICHAT_SEND_BATCH)


def _release_if_admitted(task: asyncio.Task) -> None:
    """The request was cancelled (its client left) while its reservation was being made: release it."""
    if task.cancelled() or task.exception() is not None:
        return
    reservation, _lim = task.result()
    _settle(metering.Ending(reservation, None, True, False, "client disconnected"))


def _settle(ending: metering.Ending) -> asyncio.Task:
    """Settle through the batches (whose trips run in a context of their own: this may outlive the request), kept
    running whoever awaits it."""
    return _keep(asyncio.ensure_future(_settlements.submit(ending)))


def _keep(task: asyncio.Task) -> asyncio.Task:
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    return task


async def admit(key, user, prepared: Prepared):
    """The reservation and the headers' figures, or ApiError 429 / 403."""
    task = _keep(asyncio.ensure_future(_admissions.submit((key, user, prepared, translation.get_language()))))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_release_if_admitted)
        raise
    except RateLimited as exc:
        lim = await limits(user)
        raise ApiError(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            gettext("Rate limit reached: %(limit)d requests per %(window)s. Retry after %(seconds)d seconds.")
            % {"limit": exc.limit, "window": exc.window, "seconds": exc.retry_after},
            retry_after=exc.retry_after,
            headers=lim.headers(),
        ) from None
    except metering.KeyOverCap as exc:
        lim = await limits(user)
        raise ApiError(403, "insufficient_quota", "key_spending_cap", str(exc), headers=lim.headers()) from None
    except credits.BudgetExceeded as exc:  # a spending cap: ``code`` names which, the message when it resets
        lim = await limits(user)
        raise ApiError(403, "insufficient_quota", exc.code, exc.message(), headers=lim.headers()) from None
    except credits.InsufficientCredits as exc:
        lim = await limits(user)
        raise ApiError(
            403,
            "insufficient_quota",
            "insufficient_credits",
            gettext("This answer may cost up to %(cost)s credits and you have %(balance)s.")
            % {"cost": f"{exc.estimated_cost.normalize():f}", "balance": f"{exc.balance.normalize():f}"},
            headers=lim.headers(),
        ) from None


def upstream_error(exc: kimi_errors.KimiError) -> ApiError:
    busy = isinstance(exc, kimi_errors.RateLimited | kimi_errors.Overloaded)
    status = 503 if busy else 502
    return ApiError(
        status,
        "api_error",
        exc.code,
        gettext("The Kimi service failed: %(message)s") % {"message": exc.message},
        retry_after=exc.retry_after if busy else None,
    )


# --- one answer ------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One upstream answer and its settlement: ``events()`` streams it; ``finish()`` settles it once, whatever ended
    it (the end, an upstream error, or the client leaving, which cancels the task iterating)."""

    request: ChatRequest
    reservation: credits.Reservation
    text: Pieces = field(default_factory=Pieces)
    reasoning: Pieces = field(default_factory=Pieces)
    finish_reason: str = ""
    usage: Usage | None = None
    error: kimi_errors.KimiError | None = None
    finished: bool = False

    async def events(self):
        try:
            async with contextlib.aclosing(get_client().stream_chat(self.request)) as upstream:
                async for event in upstream:
                    if isinstance(event, ContentDelta):
                        self.text.append(event.text)
                    elif isinstance(event, ReasoningDelta):
                        self.reasoning.append(event.text)
                    elif isinstance(event, Finish):
                        self.finish_reason = event.reason
                    elif isinstance(event, Usage):
                        self.usage = event
                    yield event
        except kimi_errors.KimiError as exc:
            self.error = exc
            self.usage = self.usage or exc.usage
            raise

    @property
    def generated(self) -> bool:
        return bool(self.text or self.reasoning or self.usage)

    def _usage(self) -> tuple[Usage, bool]:
        if self.usage is not None:
            return self.usage, False
        written = estimate_tokens_locally("".join(self.reasoning) + "".join(self.text))
        return Usage(prompt_tokens=self.reservation.prompt_tokens, completion_tokens=written), True

    async def finish(self) -> None:
        """Settle (or release) now; survives the caller's cancellation (a client that disconnected)."""
        if self.finished:
            return
        self.finished = True
        usage, estimated = self._usage()
        note = self.error.code if self.error is not None else "client disconnected"
        task = _settle(metering.Ending(self.reservation, usage, estimated, self.generated, note))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the settlement runs on; the request that waited for it is gone

    def finish_sync(self) -> None:
        """``finish`` from the response's close() (a sync thread): a stream whose generator never ran (the client
        left before its first byte) is released here. The ledger closes a reservation once, so this and a
        concurrent ``finish`` cannot both count."""
        if not self.finished:
            self.finished = True
            usage, estimated = self._usage()
            metering.finish(self.reservation, usage=usage, estimated=estimated, generated=self.generated)

    def total_usage(self) -> Usage:
        return self._usage()[0]


def sse(data, event: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + payload + b"\n\n"


class RunResponse(StreamingHttpResponse):
    """A streamed answer whose reservation is closed when Django closes the response, however the stream ended."""

    def __init__(self, run: Run, content, **kwargs):
        # The events a read of the upstream brought together go out in one write (ready_together.py).
        super().__init__(ready_together(content), content_type="text/event-stream; charset=utf-8", **kwargs)
        self.run = run
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"

    def close(self):
        try:
            self.run.finish_sync()
        finally:
            super().close()


@dataclass
class Accepted:
    """A request that passed every check and holds its reservation; ``run`` answers it."""

    user: object
    run: Run
    prompt_tokens: int
    stream: bool
    include_usage: bool
    limits: metering.Limits


async def accept(request, style: str, parse) -> Accepted | HttpResponse:
    """Authenticate, validate (``parse(body)`` → (ChatRequest, stream, include_usage)), count and reserve; or the
    refusal as a response in ``style`` ("openai" or "anthropic")."""
    lim = None
    try:
        key, user, lim = await authenticate(request, with_limits=True)  # the key and its limits in one trip
        upstream, stream, include_usage = parse(parse_body(request))
        prepared = await prepare(upstream, "max_tokens")
        reservation, lim = await admit(key, user, prepared)
    except ApiError as exc:
        return exc.response(style) if exc.headers else with_headers(exc.response(style), lim)
    return Accepted(
        user=user,
        run=Run(request=upstream, reservation=reservation),
        prompt_tokens=prepared.prompt_tokens,
        stream=stream,
        include_usage=include_usage,
        limits=lim,
    )


async def run_whole(accepted: Accepted, style: str) -> HttpResponse | None:
    """Run a non-streamed answer to its end (settled however it ends); the error response when the upstream failed."""
    run = accepted.run
    try:
        async for _event in run.events():
            pass
    except kimi_errors.KimiError as exc:
        await run.finish()
        return with_headers(upstream_error(exc).response(style), await limits(accepted.user))
    finally:
        await run.finish()
    return None


async def answered(accepted: Accepted, body: dict) -> HttpResponse:
    return with_headers(json_response(body), await limits(accepted.user))
