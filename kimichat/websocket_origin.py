"""Only the site's own pages may open a websocket: the same origin rule as Django's CSRF check, for sockets.

Cookies go with a websocket whatever page opens it (SameSite=Lax treats every port of a host as the same site), so
the ``Origin`` header is the only thing that tells the victim's chat page from another page on the same host. Channels'
``AllowedHostsOriginValidator`` compares the host name only: a page on ``http://127.0.0.1:8399`` could read and send
as the user of ``http://127.0.0.1:8000``. Here, as in ``CsrfViewMiddleware._origin_verified``, the origin must be
exactly ``scheme://host[:port]`` of the request itself (its ``Host`` in ``ALLOWED_HOSTS``; https when the socket is
secure or the proxy says so through ``SECURE_PROXY_SSL_HEADER``) or one of ``CSRF_TRUSTED_ORIGINS``. A socket with no
Origin (not a browser) is refused too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def _is_secure(scope) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        # "HTTP_X_FORWARDED_PROTO" → b"x-forwarded-proto"; like Django, the first value of a list counts.
        value = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        return value is not None and value.split(",", 1)[0].strip() == secure_value
    return False


def _own_origin(scope) -> str | None:
    host = _header(scope, b"host")
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # Django's own DEBUG default (HttpRequest.get_host)
    domain, _port = split_domain_port(host or "")
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    return f"{'https' if _is_secure(scope) else 'http'}://{host}"


def origin_allowed(scope) -> bool:
    origin = _header(scope, b"origin")
    if not origin:
        return False
    if origin == _own_origin(scope) or origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    # CSRF_TRUSTED_ORIGINS' wildcards ("https://*.example.com"), compared as Django's CSRF check does.
    return any(
        "://*." in trusted
        and trusted.split("://", 1)[0] == parsed.scheme
        and is_same_domain(parsed.netloc, trusted.split("://*", 1)[1])
        for trusted in settings.CSRF_TRUSTED_ORIGINS
    )


class SameOriginValidator:
    """ASGI middleware for the websocket router: refuses (403 at the handshake) a socket from any other origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
