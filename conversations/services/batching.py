"""Calls that arrive while a batch of them is being run wait for it, then go together: the mechanism both burst
paths share, the websocket's sends (services/chat/bulk_send.py) and the user API's admissions
(services/apikeys/bulk_admit.py).

The first call finds nothing running and goes at once, in a batch of one (no wait is added to a lone call). Calls
that arrive meanwhile queue; when the running batch ends, all of them (at most ``size()``) go in the next one. So a
burst costs a few batches of many rather than many trips of one, and under steady load batches stay small. One
queue per event loop (each test runs its own loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Awaitable, Callable
from typing import Any


class _Queue:
    def __init__(self) -> None:
        self.items: list[tuple[Any, asyncio.Future]] = []
        self.draining = False


class Batches:
    """``await batches.submit(item)`` → that item's outcome. ``run(items)`` (async: it makes the trip off the loop
    itself) returns one outcome per item, in order: a value, or the exception that item's caller raises. A ``run``
    that raises fails only the items of its own batch, each with that exception; a cancellation (the worker stops)
    reaches every caller still waiting."""

    def __init__(self, run: Callable[[list], Awaitable[list]], size: Callable[[], int]) -> None:
        self._run = run
        self._size = size
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future = loop.create_future()
        queue.items.append((item, future))
        if not queue.draining:
            queue.draining = True
            # A context of its own: the drain outlives the caller that started it (a request, whose thread and
            # language end with it), and runs every later caller's batch too.
            loop.create_task(self._drain(queue), context=contextvars.Context())
        return await future

    async def _drain(self, queue: _Queue) -> None:
        try:
            while queue.items:
                size = max(1, self._size())
                batch, queue.items = queue.items[:size], queue.items[size:]
                try:
                    outcomes = await self._run([item for item, _ in batch])
                except Exception as exc:  # the batch failed as a whole: each of its callers raises it
                    outcomes = [exc] * len(batch)
                except BaseException as exc:  # the worker stops: nobody waits for ever
                    for _, future in [*batch, *queue.items]:
                        _deliver(future, exc)
                    queue.items = []
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    _deliver(future, outcome)
        finally:
            queue.draining = False


def _deliver(future: asyncio.Future, outcome) -> None:
    if future.done():  # its caller went away meanwhile: what the batch did for it stands
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    elif isinstance(outcome, BaseException):
        future.cancel()
    else:
        future.set_result(outcome)
