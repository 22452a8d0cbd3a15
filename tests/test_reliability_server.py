"""Server faults with real daphne processes on the test database (SQLite file or PostgreSQL): kill -9 mid-answer,
SIGTERM, and a Redis server that dies and comes back. The several-worker PostgreSQL + Redis variants are in
tests/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
import websockets
from asgiref.sync import sync_to_async

from conversations.models import Message
from conversations.services.billing import credits
from tests import daphne
from tests.daphne import ROOT, database_url, free_port, start_daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "HEARTBEAT_TTL": "1",  # a dead worker's answers are found within ~1.5 s instead of ~25 s
    "REAP_INTERVAL": "0.5",
    "CHECKPOINT_SECONDS": "0.3",
    "KIMI_MAX_RETRIES": "0",
}
MODEL = "kimi-k2-turbo-preview"


class Socket(daphne.Socket):
    async def say(self, content: str, **extra) -> str:
        client_msg_id = str(uuid.uuid4())
        extra.setdefault("conversation_id", None)
        await self.send(type="send", content=content, client_msg_id=client_msg_id, model=MODEL, **extra)
        return client_msg_id


async def open_socket(server, user) -> Socket:
    return await daphne.open_socket(server, user, Socket)


@pytest.fixture
def workers(offline_kimi, tmp_path):
    started = []

    def start(name: str, **env):
        env = {"REDIS_URL": os.environ.get("REDIS_URL", ""), **WORKER_ENV, **env}
        server = start_daphne(offline_kimi, tmp_path, name=name, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _problems() -> list[str]:
    problems = [f"ledger: {p.detail}" for p in credits.verify_ledger()]
    for message in Message.objects.order_by("id"):
        if message.role == "user" and message.status != "complete":
            problems.append(f"user message {message.pk} is {message.status}")
        if message.role == "assistant" and not message.is_final:
            problems.append(f"answer {message.pk} is still {message.status}")
    return problems


async def message(pk) -> Message:
    return await sync_to_async(Message.objects.get)(pk=pk)


async def _started_answer(socket: Socket, content: str) -> dict:
    """The first delta of a new conversation's answer (another answer may be streaming on the same socket)."""
    await socket.say(content)
    created, _ = await socket.until(lambda f: f["type"] == "conversation")
    conversation_id = created["conversation"]["id"]
    first, _ = await socket.until(lambda f: f["type"] == "delta" and f["conversation_id"] == conversation_id)
    return first


async def _until_checkpointed(pk: int, timeout: float = 20) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await message(pk)
        if row.content:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError("no checkpoint was written")


# --- SIGKILL ------------------------------------------------------------------------------------------------------


async def test_kill_9_mid_answer_then_reapgenerations_keeps_the_checkpointed_text(workers, owner):
    a = workers("a")
    socket = await open_socket(a, owner)
    first = await _started_answer(socket, "doomed [[tokens:600]] [[rate:40]]")
    checkpointed = await _until_checkpointed(first["message_id"])
    a.signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    row = await message(first["message_id"])
    assert row.status == "streaming"  # nobody is left to finish it
    # What `make run` does at start-up, before any worker serves.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "reapgenerations"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "kimichat.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    row = await message(first["message_id"])
    assert (row.status, row.error_code) == ("interrupted", "worker_lost")
    assert row.content.startswith(checkpointed.content) and row.content  # the last checkpoint's text
    assert row.completed_at is not None and row.usage_estimated  # charged for what was written, estimated
    user = await sync_to_async(Message.objects.get)(conversation_id=row.conversation_id, role="user")
    assert user.content == "doomed [[tokens:600]] [[rate:40]]"
    assert await sync_to_async(_problems)() == []


async def test_kill_9_mid_answer_then_a_new_worker_reaps_it_and_tells_the_tab(workers, owner):
    a = workers("a")
    socket = await open_socket(a, owner)
    first = await _started_answer(socket, "doomed too [[tokens:600]] [[rate:40]]")
    await _until_checkpointed(first["message_id"])
    a.signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    b = workers("b")  # the restarted service
    again = await open_socket(b, owner)  # the browser reconnects, and resubscribes
    await again.send(type="subscribe", conversation_id=first["conversation_id"])

    def ended(frame) -> bool:
        # `done` when the reaper runs after the subscribe; a final snapshot when it ran first (it starts at once).
        if frame["type"] == "done":
            return frame["message_id"] == first["message_id"]
        return frame["type"] == "message" and frame["message"]["id"] == first["message_id"] and frame["message"][
            "status"] not in ("streaming", "pending")  # fmt: skip

    final, _ = await again.until(ended, 30)
    final = final["message"]
    assert final["status"] == "interrupted" and final["error"]["code"] == "worker_lost"
    row = await message(first["message_id"])
    assert row.status == "interrupted" and row.content and final["content"] == row.content
    await again.send(type="regenerate", conversation_id=first["conversation_id"], client_msg_id=str(uuid.uuid4()))
    # The reaper's `done` for the old answer may still arrive after its final snapshot: wait for the new answer's.
    retried, _ = await again.until(lambda f: f["type"] == "done" and f["message_id"] != first["message_id"], 60)
    assert retried["status"] == "complete"
    assert await sync_to_async(_problems)() == []


# --- SIGTERM ------------------------------------------------------------------------------------------------------


async def test_sigterm_on_a_single_worker_finishes_short_answers_and_interrupts_the_rest(workers, owner):
    c = workers("c", SHUTDOWN_GRACE="2")
    socket = await open_socket(c, owner)
    ids = {}
    for label, content in [("short", "quick [[tokens:20]] [[rate:40]]"), ("long", "long [[tokens:2000]] [[rate:40]]")]:
        ids[label] = (await _started_answer(socket, content))["message_id"]
    c.signal(signal.SIGTERM)
    assert c.process.wait(timeout=30) == 0  # a clean exit, within the grace and the bounded cleanup
    short, long = await message(ids["short"]), await message(ids["long"])
    assert short.status == "complete" and short.completion_tokens == 20
    assert (long.status, long.error_code) == ("interrupted", "server_shutdown"), c.log()[-3000:]
    assert long.content and long.completed_at
    assert "shutting down" in c.log()
    assert await sync_to_async(_problems)() == []


# --- the database connection dies mid-answer (PostgreSQL) ------------------------------------------------------------


WORKER_APPLICATION_NAME = "kimichat-test-worker"


def _terminate_worker_backends() -> int:
    """Kill only the worker's connections (tagged with application_name), never this test process's: its other
    threads hold connections later tests still use."""
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname=db["NAME"], autocommit=True,
    ) as admin:  # fmt: skip
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [WORKER_APPLICATION_NAME],
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").split(":")[0] not in ("postgres", "postgresql"),
    reason="pg_terminate_backend is PostgreSQL's (the SQLite variant, a held lock, is in test_reliability_faults.py)",
)
async def test_database_connections_killed_mid_answer_are_replaced(workers, owner):
    # Pooled connections (DATABASE_POOL_SIZE, the default on PostgreSQL): the worker keeps them open between
    # queries, so a failover or an operator's pg_terminate_backend kills connections the worker still holds.
    e = workers(
        "e",
        CHECKPOINT_SECONDS="0.2",
        DATABASE_URL=f"{database_url()}?application_name={WORKER_APPLICATION_NAME}",
    )
    socket = await open_socket(e, owner)
    first = await _started_answer(socket, "through a failover [[tokens:80]] [[rate:40]]")
    killed = 0
    for _ in range(4):
        await asyncio.sleep(0.4)
        killed += await asyncio.to_thread(_terminate_worker_backends)
    assert killed >= 1
    done, frames = await socket.until(lambda f: f["type"] == "done" and f["message_id"] == first["message_id"], 40)
    assert done["status"] == "complete", (done["error"], e.log()[-3000:])
    streamed = first["content"] + "".join(f["content"] for f in frames if f["type"] == "delta")
    row = await message(first["message_id"])
    assert row.status == "complete" and row.content == streamed
    # And the next send, on connections opened afresh, works too.
    assert (await _complete_turn(socket, "after the failover [[tokens:5]]"))["status"] == "complete"
    assert await sync_to_async(_problems)() == []


# --- Redis dies and comes back ---------------------------------------------------------------------------------------


class OwnRedis:
    """A throwaway redis-server on a free port: never the machine's shared one, which others use."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(  # noqa: S603
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    redis = OwnRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


async def _complete_turn(socket: Socket, content: str, timeout: float = 30) -> dict:
    await socket.say(content)
    done, _ = await socket.until(lambda f: f["type"] == "done", timeout)
    return done


async def _redis_dies_mid_answer(workers, owner, own_redis):
    """A worker on its own Redis: one turn, then Redis is killed mid-answer and restarted (empty) a second later.
    Returns the worker, the running answer's first delta and its row once final."""
    d = workers("d", REDIS_URL=own_redis.url)
    socket = await open_socket(d, owner)
    assert (await _complete_turn(socket, "before [[tokens:5]]"))["status"] == "complete"
    first = await _started_answer(socket, "during [[tokens:200]] [[rate:40]]")
    await _until_checkpointed(first["message_id"])
    own_redis.kill()
    await asyncio.sleep(1.0)
    own_redis.start()
    deadline = time.monotonic() + 40
    while not (row := await message(first["message_id"])).is_final and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert row.is_final, (row.status, d.log()[-3000:])
    return d, first, row


async def test_redis_restart_mid_session_loses_nothing_and_the_app_recovers(workers, owner, own_redis):
    d, first, row = await _redis_dies_mid_answer(workers, owner, own_redis)
    # The answer that was running does not need Redis: the relay hands its frames to its own process's sockets, and
    # a failed stream-state write is logged, not fatal. It ends complete, with its whole text and usage.
    assert row.status == "complete" and row.completion_tokens == 200, (row.status, row.error_code, d.log()[-3000:])

    # A browser reconnects (its old socket died with the channel layer), with backoff, and chats on. The first
    # attempt in the seconds after Redis returns may fail while the worker's connection pool recovers.
    done, failures = None, []
    deadline = time.monotonic() + 30
    while done is None and time.monotonic() < deadline:
        try:
            fresh = await open_socket(d, owner)
            done = await _complete_turn(fresh, "after [[tokens:5]]", timeout=20)
        except (OSError, EOFError, TimeoutError, websockets.WebSocketException) as exc:
            failures.append(repr(exc))
            await asyncio.sleep(1)
    assert done is not None and done["status"] == "complete", (failures, d.log()[-6000:])
    assert len(failures) <= 2, failures
    await fresh.send(type="ping")
    pong, _ = await fresh.until(lambda f: f["type"] == "pong", 10)
    assert pong == {"type": "pong"}
    users = await sync_to_async(lambda: list(Message.objects.filter(role="user").values_list("content", flat=True)))()
    assert users == ["before [[tokens:5]]", "during [[tokens:200]] [[rate:40]]", "after [[tokens:5]]"]
    assert await sync_to_async(_problems)() == []
    assert d.process.poll() is None  # the worker never died
