"""Django's ASGI handler, with the user API's requests sharing one thread for their synchronous steps.

Django runs each HTTP request in an ``asgiref.ThreadSensitiveContext``: the request's first synchronous step (a
``MiddlewareMixin`` middleware, a signal's receiver, the response's ``close()``) starts a thread of the request's
own, which lives until the response is sent, and is then joined from yet another new thread. A page or a JSON call
holds it for milliseconds. A streamed answer of ``/v1/`` holds it, idle, for the whole answer: 1,000 streams were
1,002 threads in the worker, ~17–29 KB of memory each, and a thread started and another joined per request
(docs/performance.md, issue 23, session 11).

So ``/v1/`` requests run in a context whose executor is one thread the worker keeps (``API_THREAD``), as asgiref
allows (``ThreadSensitiveContext(executor=...)``, which never shuts a given executor down). Their synchronous steps
are short and were already serialized by the GIL; their database trips go through ``services/db_threads.py`` as
before. A task a request starts must not make thread-sensitive calls after the request ends (asgiref refuses them):
the user API's background settlements run in a context of their own (``services/batching.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

SHARED_PREFIXES = ("/v1/",)  # KimiChat's API for scripts (conversations/api_v1)

# One thread for the synchronous steps of every /v1/ request of this worker.
API_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimichat-api")


class Handler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _route(scope).startswith(SHARED_PREFIXES):
            async with ThreadSensitiveContext(executor=API_THREAD):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route(scope) -> str:
    """The path Django routes: without the prefix the site is served under, if any (ASGI's ``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def get_asgi_application() -> Handler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    import django

    django.setup(set_prefix=False)
    return Handler()
