"""A streamed response's parts that are ready together, written together.

Every part Django takes from a streamed response is one write to the client's socket (daphne writes it at once: a
``send`` each, kimichat/eager_write.py), and on its way it crosses Django's response iteration, daphne and
twisted.web's chunked encoding. A user API stream yields one SSE event per upstream piece. While the worker keeps up,
the pieces come one per read of the upstream and go out one by one; when it falls behind, a read brings several,
and their events are produced without the stream ever waiting, yet each still paid its own write.

``ready_together(parts)`` joins the parts that come without a wait in between into one: it drives each step of the
stream itself and, the moment a step has to wait (for the upstream, the database...), first hands over what is
ready and then waits as the step asked. A part is never held back for a later one, so an idle worker writes exactly
as before, and a loaded one writes once per read rather than once per piece. Cancellation, errors and ``aclose``
reach the stream as they would through ``async for``.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterable, AsyncIterator


@types.coroutine
def _finish(step, pending):
    """Await the rest of ``step`` (an ``__anext__`` already driven to its first wait, which asked for ``pending``)
    on behalf of the task that runs us: what the step yields goes up to the task, what the task sends (or throws)
    comes back down. Returns the step's part; raises StopAsyncIteration (the stream ended) or the stream's error."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # noqa: BLE001 - cancellation included: it belongs to the step
            try:
                pending = step.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = step.send(sent)
            except StopIteration as done:
                return done.value


async def _cancel(step) -> None:
    """End a step that waits as a cancelled task's would end: with CancelledError where it waits, its cleanup run
    to the end."""
    try:
        pending = step.throw(asyncio.CancelledError())
    except (asyncio.CancelledError, StopIteration, StopAsyncIteration):
        return
    try:
        await _finish(step, pending)
    except (asyncio.CancelledError, StopAsyncIteration):
        pass


async def ready_together(parts: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``parts``, each run of those produced without a wait joined into one (see the module's docstring)."""
    stream = aiter(parts)
    ready: list[bytes] = []
    try:
        while True:
            step = anext(stream)
            try:
                pending = step.send(None)
            except StopIteration as done:  # produced without waiting
                ready.append(done.value)
                continue
            except StopAsyncIteration:
                break
            except BaseException:
                if ready:  # what the stream produced before it failed still goes out first
                    yield b"".join(ready)
                raise
            if ready:
                try:
                    yield b"".join(ready)
                except BaseException:  # closed (a server whose write waits, cancelled) while the step waits
                    await _cancel(step)
                    raise
                ready.clear()
            try:
                part = await _finish(step, pending)
            except StopAsyncIteration:
                break
            ready.append(part)
        if ready:
            yield b"".join(ready)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
