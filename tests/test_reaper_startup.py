"""A restarted worker reaps the answers its dead predecessor left `streaming`, without waiting for a socket: the
registry's background tasks start with the worker (conversations/services/chat/startup.py), not with a websocket."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from conversations.services.billing import credits
from tests import daphne
from tests.daphne import start_daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

HEARTBEAT_TTL = 1.0
REAP_INTERVAL = 0.5
WORKER_ENV = {
    "HEARTBEAT_TTL": str(HEARTBEAT_TTL),
    "REAP_INTERVAL": str(REAP_INTERVAL),
    "CHECKPOINT_SECONDS": "0.3",
    "KIMI_MAX_RETRIES": "0",
}


@pytest.fixture
def workers(offline_kimi, tmp_path):
    started = []

    def start(name: str):
        server = start_daphne(
            offline_kimi, tmp_path, name=name, REDIS_URL=os.environ.get("REDIS_URL", ""), **WORKER_ENV
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _status(pk: int) -> str:
    return await sync_to_async(lambda: Message.objects.get(pk=pk).status)()


async def test_a_new_worker_reaps_a_killed_workers_answer_with_no_socket_connected(workers, owner):
    a = workers("a")
    socket = await daphne.open_socket(a, owner)
    await socket.send(
        type="send", conversation_id=None, content="doomed [[tokens:600]] [[rate:40]]",
        client_msg_id="0b7f2f34-1c8e-4f55-9a55-0c3a8f1f2e10", model="kimi-k2-turbo-preview",
    )  # fmt: skip
    first, _ = await socket.until(lambda f: f["type"] == "delta")
    answer = first["message_id"]
    a.signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    await socket.connection.close()
    assert await _status(answer) == "streaming"  # nobody is left to finish it

    b = workers("b")  # the restarted service; only its /healthz was asked, no socket ever connects
    started = time.monotonic()
    # Its reaper's first round runs at start; an answer counts as orphaned once it is HEARTBEAT_TTL old and
    # without a heartbeat, and rounds repeat every REAP_INTERVAL. Generous slack for a loaded test machine.
    deadline = started + REAP_INTERVAL + HEARTBEAT_TTL + 10
    while await _status(answer) in ("streaming", "pending"):
        assert time.monotonic() < deadline, (
            f"still streaming after {time.monotonic() - started:.1f}s:\n{b.log()[-2000:]}"
        )
        await asyncio.sleep(0.1)
    row = await sync_to_async(Message.objects.get)(pk=answer)
    assert (row.status, row.error_code) == ("interrupted", "worker_lost")
    assert await sync_to_async(credits.verify_ledger)() == []
    assert "/ws/chat/" not in b.log()  # no socket reached the new worker
