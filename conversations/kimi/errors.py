"""One small hierarchy for everything that can go wrong upstream, each with a stable ``code``.

The ``message`` is what a user is shown: it never contains the API key or the provider's raw body.
"""

from __future__ import annotations


class KimiError(Exception):
    code = "upstream_error"
    retryable = False  # may the *client* retry this request (before any content byte)?
    default_message = "The Kimi service returned an error."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        request_id: str = "",
        retry_after: float | None = None,
        partial_text: str = "",
        partial_reasoning: str = "",
        detail: str = "",
        usage=None,
    ):
        self.message = message or self.default_message
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.partial_text = partial_text
        self.partial_reasoning = partial_reasoning
        self.detail = detail  # provider's own type/code, for logs and admins (never the key)
        self.usage = usage  # events.Usage when the provider reported it before failing (e.g. a stream without [DONE])
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, request_id={self.request_id!r})"


class BadRequest(KimiError):
    code = "bad_request"
    default_message = "Kimi rejected the request as invalid."


class InvalidParameter(BadRequest):
    """Raised locally, before any request, when a setting does not suit the chosen model."""

    code = "invalid_parameter"


class ContextTooLong(BadRequest):
    code = "context_too_long"
    default_message = "The conversation is too long for this model. Start a new chat or pick a larger model."


class ContentFiltered(BadRequest):
    code = "content_filtered"
    default_message = "Kimi declined this request because of its content policy."


class AuthenticationFailed(KimiError):
    code = "upstream_auth_failed"
    default_message = "The server's Kimi API key was rejected. Please contact the administrator."


class PermissionDenied(KimiError):
    """Out of balance, quota or credits (Moonshot bills with 429 ``exceeded_current_quota_error``)."""

    code = "upstream_quota_exceeded"
    default_message = "The Kimi account of this server is out of quota or credits. Please contact the administrator."


QuotaExceeded = PermissionDenied  # the name says what it is; PermissionDenied stays for existing imports


class AccessDenied(KimiError):
    """403 ``permission_denied_error`` ("The API you are accessing is not open"): the account may not use this
    endpoint or model. Telling users to top up would send the administrator the wrong way."""

    code = "upstream_access_denied"
    default_message = (
        "The Kimi account of this server is not allowed to use this model or feature. Please contact the administrator."
    )


class ModelNotFound(KimiError):
    code = "model_not_found"
    default_message = "This model is not available. Pick another model."


class EndpointNotFound(KimiError):
    """A 404 that names no model: the base URL or the API format is wrong, so another model would not help."""

    code = "upstream_not_found"
    default_message = "The Kimi service address is misconfigured on this server. Please contact the administrator."


class RateLimited(KimiError):
    code = "upstream_rate_limited"
    retryable = True
    default_message = "Kimi is receiving too many requests right now. Please try again shortly."


class Overloaded(KimiError):
    code = "upstream_overloaded"
    retryable = True
    default_message = "Kimi is overloaded right now. Please try again shortly."


class ServerError(KimiError):
    code = "upstream_server_error"
    retryable = True
    default_message = "Kimi had an internal error. Please try again."


class Timeout(KimiError):
    code = "upstream_timeout"
    retryable = True
    default_message = "Kimi took too long to answer."


class ConnectionFailed(KimiError):
    code = "upstream_connection_error"
    retryable = True
    default_message = "Could not reach the Kimi service."


class Interrupted(KimiError):
    """The stream ended without ``[DONE]``: whatever arrived is kept as a partial answer."""

    code = "upstream_interrupted"
    default_message = "The answer was cut off before it finished."


class BadResponse(KimiError):
    """The provider answered 200 with something that is not the protocol (HTML, non-JSON ``data:`` lines)."""

    code = "upstream_bad_response"
    default_message = "Kimi sent a response this app could not understand."
