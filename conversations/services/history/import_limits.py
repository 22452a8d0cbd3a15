"""How many imports may run: one at a time per user, a few per hour per user, and a few at once per process.

An import parses up to 20 MB of JSON (several hundred MB of Python objects at its peak) and writes for seconds: three
at once took a worker from 101 to 1,256 MB. The per-process cap bounds that memory; the per-user limits stop one
account from keeping the database busy. Counters live in the cache (Redis when scaled out), like the chat's rate
limits; the per-process cap is a semaphore, since memory is per process.
"""

from __future__ import annotations

import contextlib
import threading
import time

from django.core.cache import cache
from django.utils.translation import gettext

IMPORTS_PER_HOUR = 10  # per user; a re-import of the same file (after a failure) fits several times over
IMPORTS_AT_ONCE_PER_PROCESS = 2
RUNNING_TTL = 15 * 60  # a crashed import's "running" mark expires by itself
HOUR = 3600

_process_slots = threading.BoundedSemaphore(IMPORTS_AT_ONCE_PER_PROCESS)


class ImportRefused(Exception):
    def __init__(self, code: str, message: str, status: int, retry_after: int):
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


@contextlib.contextmanager
def admitted(user):
    """Run one import of ``user`` inside, or raise ``ImportRefused`` (429 for the user's limits, 503 when the
    process is busy with other imports). Nothing is counted for a refused import."""
    running_key = f"import:running:{user.pk}"
    if not cache.add(running_key, 1, RUNNING_TTL):
        raise ImportRefused(
            "rate_limited", gettext("An import of yours is still running. Wait for it to finish."), 429, 10
        )
    try:
        window = int(time.time()) // HOUR
        count_key = f"import:count:{user.pk}:{window}"
        cache.add(count_key, 0, HOUR + 60)
        if cache.incr(count_key) > IMPORTS_PER_HOUR:
            raise ImportRefused(
                "rate_limited",
                gettext("You can import at most %(count)s files per hour. Try again later.")
                % {"count": IMPORTS_PER_HOUR},
                429,
                HOUR - int(time.time()) % HOUR,
            )
        if not _process_slots.acquire(blocking=False):
            cache.decr(count_key)
            raise ImportRefused(
                "server_busy", gettext("The server is busy with other imports. Try again in a minute."), 503, 30
            )
        try:
            yield
        finally:
            _process_slots.release()
    finally:
        cache.delete(running_key)
