"""Where a worker's trips to the database run, off the event loop.

- ``off_the_loop(func, ...)``: the trips that batch a burst (the websocket's sends, the user API's key checks and
  admissions; services/batching.py). On SQLite, the one database thread every call of the worker outside a request
  shares (SQLite's writers queue on one file lock anyway). On PostgreSQL, a few threads of their own
  (``SEND_THREADS``): half of a send's time there is waiting for the database's answers, during which another
  send's Python can run; the row locks that make two workers' sends safe make two threads' sends safe
  (tests/test_send_threads.py). Each holds a pooled connection while it works.
- ``on_database_thread(func)``: a user API request's other trips, where ``off_the_loop`` sends its own. A ``/v1/``
  request has no thread of its own (kimichat/request_threads.py). On SQLite a request's own thread would anyway be
  one more writer on the file lock, whose busy handler sleeps up to 100 ms a retry (at 400 streaming requests their
  admission queued for seconds: docs/performance.md, session 6).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connection

_send_executors: dict[int, ThreadPoolExecutor] = {}  # by size (SEND_THREADS): one per process


def send_threads() -> ThreadPoolExecutor | None:
    """The threads of ``off_the_loop`` when the database takes concurrent writers (PostgreSQL and ``SEND_THREADS``
    > 1); None: the one database thread every other call of the worker shares."""
    size = settings.KIMICHAT_SEND_THREADS
    if connection.vendor != "postgresql" or size <= 1:
        return None
    if size not in _send_executors:
        _send_executors[size] = ThreadPoolExecutor(size, thread_name_prefix="kimichat-send")
    return _send_executors[size]


def _threads():
    """The send threads (PostgreSQL), or the one database thread every call of the worker outside a request shares
    (asgiref's single thread-sensitive thread, where ``database_sync_to_async`` sends them)."""
    return send_threads() or SyncToAsync.single_thread_executor


async def off_the_loop(func, *args, **kwargs):
    """``func(*args, **kwargs)`` on the database thread (SQLite) or on the send threads (PostgreSQL)."""
    return await DatabaseSyncToAsync(func, thread_sensitive=False, executor=_threads())(*args, **kwargs)


def on_database_thread(func):
    """``func`` for a user API request's trips to the database (``await on_database_thread(f)(...)``): where
    ``off_the_loop`` sends them, never the event loop's thread nor a thread of the request's own."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=_threads())
