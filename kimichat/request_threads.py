"""Django's ASGI handler, with a user API request's thread let go while its answer streams.

Django runs each HTTP request in an ``asgiref.ThreadSensitiveContext``: the request's first synchronous step (a
``MiddlewareMixin`` middleware, a signal's receiver, the response's ``close()``) starts a thread of the request's
own, which lives until the response is sent, and is then joined from yet another new thread. A page or a JSON call
holds it for milliseconds. A streamed answer of ``/v1/`` held it, idle, for the whole answer: 1,000 streams were
1,002 threads in the worker, ~17–29 KB of memory each (docs/performance.md, issue 23, session 11).

So a ``/v1/`` request runs in a context whose executor is an ``IdleThread``: one thread at a time, as asgiref's
thread-sensitive mode requires, started when the request has synchronous work and ended when it has had none for
``IDLE_SECONDS``, its database connections closed first (a connection belongs to its thread; a later step opens its
own). The request's steps before its stream run on one thread, as before; its ``close()`` after the stream runs on
a new one. (One thread shared by every ``/v1/`` request was tried and measured: the requests' steps queued behind
each other, and at 1,000 streams a request waited 17 s to be admitted.)

A task a request starts must not make thread-sensitive calls after the request ends (asgiref refuses them): the
user API's background settlements run in a context of their own (``services/batching.py``).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Executor, Future

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

SHARED_PREFIXES = ("/v1/",)  # KimiChat's API for scripts (conversations/api_v1)
IDLE_SECONDS = 0.5  # a request's steps before its stream come within milliseconds of each other


class IdleThread(Executor):
    """An executor of one thread at a time, started on demand, that ends after ``idle`` seconds without work."""

    def __init__(self, idle: float = IDLE_SECONDS, name: str = "kimichat-request") -> None:
        self._idle = idle
        self._name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shut = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, fn, args, kwargs))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        try:
            while True:
                try:
                    future, fn, args, kwargs = self._work.get(timeout=self._idle)
                except queue.Empty:
                    with self._lock:
                        if self._work.empty():  # nothing came meanwhile: a later submit starts a new thread
                            self._thread = None
                            return
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own (a pooled one goes back to the pool)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()


class Handler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _route(scope).startswith(SHARED_PREFIXES):
            async with ThreadSensitiveContext(executor=IdleThread()):
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
