"""Several real daphne workers sharing PostgreSQL and Redis: any worker serves any socket.

Runs in the PostgreSQL + Redis pass of `make test` (skipped, with the reason printed, on SQLite alone).
"""

from __future__ import annotations

import signal
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from conversations.models import Message
from tests.daphne import open_socket, start_daphne

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or connection.vendor != "postgresql",
        reason="needs PostgreSQL + Redis (the second pass of make test)",
    ),
]

WORKER_ENV = {
    "HEARTBEAT_TTL": "2",  # a dead worker's answers are found within ~2.5 s instead of ~25 s
    "REAP_INTERVAL": "0.5",
    "CHECKPOINT_SECONDS": "0.3",
    "KIMI_MAX_RETRIES": "0",
}


@pytest.fixture
def workers(offline_kimi, tmp_path):
    started = []

    def start(name: str, **env):
        server = start_daphne(offline_kimi, tmp_path, name=name, REDIS_URL=settings.REDIS_URL, **WORKER_ENV, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def is_delta(frame, minimum_seq=1):
    return frame["type"] == "delta" and frame["seq"] >= minimum_seq


async def message(pk) -> Message:
    return await sync_to_async(Message.objects.get)(pk=pk)


async def test_a_tab_on_worker_b_follows_and_stops_an_answer_running_on_worker_a(workers, owner):
    a, b = workers("a"), workers("b")
    on_a, on_b = await open_socket(a, owner), await open_socket(b, owner)
    await on_a.send(
        type="send",
        conversation_id=None,
        content="slow [[tokens:400]] [[rate:40]]",
        client_msg_id=str(uuid.uuid4()),
        model="kimi-k2-turbo-preview",
    )
    first, _ = await on_a.until(lambda f: is_delta(f, 2))
    conversation_id, message_id = first["conversation_id"], first["message_id"]

    await on_b.send(type="subscribe", conversation_id=conversation_id)
    snapshot, _ = await on_b.until(lambda f: f["type"] == "message" and f["message"]["id"] == message_id)
    snapshot = snapshot["message"]
    assert snapshot["status"] == "streaming" and snapshot["seq"] >= 2 and snapshot["content"]
    live = []
    while len(live) < 3:
        frame = await on_b.recv()
        if frame["type"] == "delta":
            live.append(frame)
    assert [f["seq"] for f in live] == [snapshot["seq"] + 1, snapshot["seq"] + 2, snapshot["seq"] + 3]

    await on_b.send(type="stop", conversation_id=conversation_id)  # the answer runs on worker A
    done_b, rest = await on_b.until(lambda f: f["type"] == "done")
    done_a, _ = await on_a.until(lambda f: f["type"] == "done")
    assert done_a["status"] == done_b["status"] == "stopped"
    seen_on_b = snapshot["content"] + "".join(f["content"] for f in live + rest if f["type"] == "delta")
    stored = await message(message_id)
    assert stored.status == "stopped" and stored.content == seen_on_b
    assert stored.completion_tokens < 400


async def test_sigkill_of_the_generating_worker_ends_interrupted_and_the_user_can_retry(workers, owner):
    a, b = workers("a"), workers("b")
    on_a, on_b = await open_socket(a, owner), await open_socket(b, owner)
    await on_a.send(
        type="send",
        conversation_id=None,
        content="doomed [[tokens:600]] [[rate:40]]",
        client_msg_id=str(uuid.uuid4()),
        model="kimi-k2-turbo-preview",
    )
    first, _ = await on_a.until(lambda f: is_delta(f, 1))
    conversation_id, message_id = first["conversation_id"], first["message_id"]
    await on_b.send(type="subscribe", conversation_id=conversation_id)
    await on_b.until(lambda f: is_delta(f, 20))  # > 0.3 s of text: at least one checkpoint is stored

    a.signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    done, _ = await on_b.until(lambda f: f["type"] == "done" and f["message_id"] == message_id, timeout=30)
    assert done["status"] == "interrupted" and done["error"]["code"] == "worker_lost"
    stored = await message(message_id)
    assert stored.status == "interrupted" and stored.content  # the last checkpoint's text is kept
    assert done["message"]["content"] == stored.content

    await on_b.send(type="regenerate", conversation_id=conversation_id, client_msg_id=str(uuid.uuid4()))
    retried, _ = await on_b.until(lambda f: f["type"] == "done", timeout=60)
    assert retried["status"] == "complete"
    assert (await message(message_id)).superseded_by_id == retried["message_id"]


async def test_sigterm_lets_short_answers_finish_and_stores_the_rest_as_interrupted(workers, owner):
    c = workers("c", SHUTDOWN_GRACE="2")
    socket = await open_socket(c, owner)
    ids = {}
    for label, content in [
        ("short", "quick [[tokens:20]] [[rate:40]]"),
        ("long", "endless [[tokens:2000]] [[rate:40]]"),
    ]:
        await socket.send(
            type="send",
            conversation_id=None,
            content=content,
            client_msg_id=str(uuid.uuid4()),
            model="kimi-k2-turbo-preview",
        )
        created, _ = await socket.until(lambda f: f["type"] == "conversation")
        conversation_id = created["conversation"]["id"]
        first, _ = await socket.until(lambda f, c=conversation_id: is_delta(f, 1) and f["conversation_id"] == c)
        ids[label] = first["message_id"]
    c.signal(signal.SIGTERM)
    assert c.process.wait(timeout=30) is not None
    short, long = await message(ids["short"]), await message(ids["long"])
    assert short.status == "complete"
    assert (long.status, long.error_code) == ("interrupted", "server_shutdown"), (
        long.status,
        long.completion_tokens,
        c.log()[-3000:],
    )
    assert long.content
    assert "shutting down" in c.log()


async def test_a_web_search_answer_on_worker_a_is_followed_from_worker_b_in_the_middle_of_its_search(workers, owner):
    a, b = workers("a"), workers("b")
    on_a, on_b = await open_socket(a, owner), await open_socket(b, owner)
    await on_a.send(
        type="send",
        conversation_id=None,
        content="news [[search:kimi k3]] [[fault:search_timeout:2]]",
        client_msg_id=str(uuid.uuid4()),
        model="kimi-k3",
        conversation={"settings": {"web_search": True}},
    )
    searching, _ = await on_a.until(lambda f: f["type"] == "tool")
    assert (searching["query"], searching["status"]) == ("kimi k3", "searching")
    conversation_id, message_id = searching["conversation_id"], searching["message_id"]

    await on_b.send(type="subscribe", conversation_id=conversation_id)
    snapshot, _ = await on_b.until(lambda f: f["type"] == "message" and f["message"]["id"] == message_id)
    snapshot = snapshot["message"]
    assert snapshot["status"] == "streaming" and [s["status"] for s in snapshot["searches"]] == ["searching"]
    done, frames = await on_b.until(lambda f: f["type"] == "done", timeout=30)
    assert [(f["query"], f["status"]) for f in frames if f["type"] == "tool"] == [("kimi k3", "done")]
    seqs = [f["seq"] for f in frames if f["type"] == "delta"]
    assert seqs == list(range(snapshot["seq"] + 1, done["message"]["seq"] + 1))  # one stream, no gap
    assert done["status"] == "complete" and done["message"]["searches"][0]["sources"]
    assert (
        snapshot["reasoning"] + "".join(f["reasoning"] for f in frames if f["type"] == "delta")
        == (await message(message_id)).reasoning
    )
