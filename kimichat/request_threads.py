"""Django's ASGI handler, with two middleware chains: where a request's synchronous steps run.

Django runs each HTTP request in an ``asgiref.ThreadSensitiveContext``: its synchronous steps (a ``MiddlewareMixin``
middleware's ``process_*``, a signal's receivers, a sync view, the response's ``close()``) run on a thread of the
request's own, started for it, and joined from yet another new thread when the response has been sent.

- Pages (everything but ``/v1/``): the middleware run as they would under WSGI, synchronously, in one trip to the
  request's thread that also runs the view. (Django's default chain hops between that thread and the event loop at
  each middleware that changes mode: a sync-only middleware high in ``MIDDLEWARE`` above async-capable ones below
  it meant a trip per ``process_view`` and the view, after a trip back to the loop.)
- ``/v1/`` (KimiChat's API for scripts, ``conversations/api_v1``): no thread of its own. The views are async and
  send their database work to the database threads (``services/db_threads.py``). The middleware's steps for such a
  request are a few header reads and writes: they run on the event loop, called directly (``_inline``, ``_steps``);
  Django refuses an ORM call on the loop's thread (``SynchronousOnlyOperation``), so a step that needed the database
  could not pass unnoticed. The request's remaining thread-sensitive calls, the ``request_started`` receivers and
  the response's ``close()`` (with ``request_finished``'s), go to one thread every ``/v1/`` request shares
  (``API_STEPS``): short calls that never wait for the view. (Session 11's shared thread failed because the whole
  synchronous chain ran there and held it while the async view ran: docs/performance.md, issue 23, sessions 11
  and 13.) A streamed answer held a thread of its own, idle, for the whole answer (1,000 streams were 1,002
  threads), and each request started two.

A task a ``/v1/`` request starts must not make thread-sensitive calls after the request ends (asgiref refuses them):
the user API's background settlements and the provider's header snapshots run in a context of their own
(``services/batching.py``, ``kimi/provider_state.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

API_PREFIXES = ("/v1/",)  # KimiChat's API for scripts (conversations/api_v1)
# Middleware that never act on an API request: WhiteNoise serves STATIC_URL and WHITENOISE_ROOT's files only.
NOT_ON_THE_API = frozenset({"whitenoise.middleware.WhiteNoiseMiddleware"})


# The ``/v1/`` requests' thread-sensitive calls: one at a time, on one thread, as asgiref's thread-sensitive mode
# requires of a context's executor.
API_STEPS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimichat-api-steps")


def _inline(method):
    """A coroutine function calling the synchronous ``method`` directly (Django's own adapter, ``sync_to_async``,
    would send it to a thread and back)."""

    async def call(*args, **kwargs):
        return method(*args, **kwargs)

    return call


def _steps(middleware: MiddlewareMixin):
    """``MiddlewareMixin``'s async call, its ``process_request`` and ``process_response`` called directly."""
    process_request = getattr(middleware, "process_request", None)
    process_response = getattr(middleware, "process_response", None)
    get_response = middleware.get_response

    async def call(request):
        response = process_request(request) if process_request else None
        response = response or await get_response(request)
        return process_response(request, response) if process_response else response

    return call


class ApiHandler(ASGIHandler):
    """``/v1/``'s handler: ``settings.MIDDLEWARE`` as one async chain, the middleware's steps called on the loop, the
    request's other thread-sensitive calls on ``API_STEPS``."""

    def load_middleware(self, is_async=True):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.MIDDLEWARE):
            if path in NOT_ON_THE_API:
                continue
            middleware = import_string(path)
            if not getattr(middleware, "async_capable", False):
                raise ImproperlyConfigured(f"{path} must be async-capable to run on KimiChat's API (/v1/)")
            try:
                instance = middleware(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, _inline(instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(_inline(instance.process_template_response))
            if hasattr(instance, "process_exception"):  # Django calls these synchronously (on API_STEPS)
                self._exception_middleware.append(instance.process_exception)
            plain_mixin = isinstance(instance, MiddlewareMixin) and type(instance).__call__ is MiddlewareMixin.__call__
            step = _steps(instance) if plain_mixin else instance
            if not iscoroutinefunction(step):
                raise ImproperlyConfigured(f"{path} did not take an async get_response")
            handler = convert_exception_to_response(step)
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send):
        async with ThreadSensitiveContext(executor=API_STEPS):
            await self.handle(scope, receive, send)


class PageHandler(ASGIHandler):
    """Every other request's handler: the middleware and the view synchronously, in one trip to the request's
    thread."""

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)
        chain = self._middleware_chain
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


class Handler:
    """The worker's HTTP application: ``/v1/`` to ``ApiHandler``, the rest to ``PageHandler``."""

    def __init__(self) -> None:
        static = "/" + settings.STATIC_URL.lstrip("/")
        if static.startswith(API_PREFIXES):
            raise ImproperlyConfigured(f"STATIC_URL ({settings.STATIC_URL}) cannot be under the API {API_PREFIXES}")
        self.api = ApiHandler()
        self.pages = PageHandler()
        markcoroutinefunction(self)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _route(scope).startswith(API_PREFIXES):
            return await self.api(scope, receive, send)
        return await self.pages(scope, receive, send)


def _route(scope) -> str:
    """The path Django routes: without the prefix the site is served under, if any (ASGI's ``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def get_asgi_application() -> Handler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    import django

    django.setup(set_prefix=False)
    return Handler()
