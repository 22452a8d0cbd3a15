"""The user API's stream writes the parts that are ready together as one (conversations/api_v1/ready_together.py).

The seam is an async iterator of bytes, as Django takes it from a streamed response: the streams here are real
async generators that wait on real asyncio objects.
"""

from __future__ import annotations

import asyncio

import pytest

from conversations.api_v1.common import RunResponse
from conversations.api_v1.ready_together import ready_together


async def collect(parts) -> list[bytes]:
    return [part async for part in parts]


async def test_parts_produced_without_a_wait_go_out_as_one():
    async def stream():
        yield b"a"
        yield b"b"
        yield b"c"  # one read of the upstream: three events
        await asyncio.sleep(0.01)
        yield b"d"
        yield b"e"
        await asyncio.sleep(0)
        yield b"f"

    assert await collect(ready_together(stream())) == [b"abc", b"de", b"f"]


async def test_a_part_is_never_held_for_the_next_one():
    more = asyncio.Event()
    got: list[bytes] = []

    async def stream():
        yield b"first"
        await more.wait()  # set only once the consumer has the first part
        yield b"second"

    async def consume():
        async for part in ready_together(stream()):
            got.append(part)
            more.set()

    await asyncio.wait_for(consume(), timeout=5)
    assert got == [b"first", b"second"]


async def test_what_was_ready_goes_out_before_the_error():
    async def stream():
        yield b"a"
        yield b"b"
        raise ValueError("upstream broke")

    got: list[bytes] = []
    with pytest.raises(ValueError, match="upstream broke"):
        async for part in ready_together(stream()):
            got.append(part)
    assert got == [b"ab"]


async def test_cancelling_the_consumer_reaches_the_waiting_stream_and_its_cleanup():
    cleaned, waiting = asyncio.Event(), asyncio.Event()

    async def stream():
        try:
            yield b"a"
            waiting.set()
            await asyncio.sleep(60)
            yield b"never"
        finally:
            await asyncio.sleep(0)  # its cleanup may wait too (the user API settles the answer)
            cleaned.set()

    got: list[bytes] = []

    async def consume():
        async for part in ready_together(stream()):
            got.append(part)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(waiting.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set() and got == [b"a"]


async def test_closing_it_while_the_stream_waits_cancels_the_stream_where_it_waits():
    # A server whose write can wait closes the response while a part is out and the stream's next step waits.
    cancelled, cleaned = asyncio.Event(), asyncio.Event()
    step_started = asyncio.Event()

    async def stream():
        try:
            yield b"a"
            step_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            yield b"never"
        finally:
            await asyncio.sleep(0)
            cleaned.set()

    together = ready_together(stream())
    # b"a" is ready; the next step starts and waits before "a" is handed over (sleep(60) is entered first).
    assert await together.__anext__() == b"a"
    assert step_started.is_set()
    await together.aclose()
    assert cancelled.is_set() and cleaned.is_set()


async def test_the_user_api_response_streams_through_it():
    class Run:  # RunResponse only closes the run when Django closes the response
        def finish_sync(self):
            pass

    async def stream():
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"
        await asyncio.sleep(0)
        yield b"data: [DONE]\n\n"

    response = RunResponse(Run(), stream())
    assert [part async for part in response] == [b"data: 1\n\ndata: 2\n\n", b"data: [DONE]\n\n"]
