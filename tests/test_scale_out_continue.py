"""Continue across real daphne workers sharing PostgreSQL and Redis: a tab on another worker follows a continued
answer from its whole text so far, with no gap and no duplicate.

Runs in the PostgreSQL + Redis pass of `make test` (skipped on SQLite alone), like test_scale_out.py.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from conversations.models import Conversation
from tests.daphne import open_socket
from tests.test_scale_out import is_delta, message, workers  # noqa: F401 - workers is a fixture

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or connection.vendor != "postgresql",
        reason="needs PostgreSQL + Redis (the second pass of make test)",
    ),
]


async def test_a_tab_on_worker_b_follows_an_answer_continued_on_worker_a(workers, owner):  # noqa: F811
    a, b = workers("a"), workers("b")
    conversation = await sync_to_async(Conversation.objects.create)(
        owner=owner, model="kimi-k2-turbo-preview", max_tokens=15
    )
    on_a, on_b = await open_socket(a, owner), await open_socket(b, owner)
    await on_a.send(type="subscribe", conversation_id=conversation.pk)
    await on_a.send(
        type="send",
        conversation_id=conversation.pk,
        content="long [[tokens:400]] [[rate:60]]",
        client_msg_id=str(uuid.uuid4()),
    )
    first, _ = await on_a.until(lambda f: f["type"] == "done")
    assert first["finish_reason"] == "length" and first["message"]["cut_off"] == "length"
    cut = first["message"]

    await on_a.send(
        type="continue", conversation_id=conversation.pk, message_id=cut["id"], client_msg_id=str(uuid.uuid4())
    )
    await on_a.until(lambda f: is_delta(f, cut["seq"] + 3))
    await on_b.send(type="subscribe", conversation_id=conversation.pk)
    snapshot, _ = await on_b.until(lambda f: f["type"] == "message" and f["message"]["id"] == cut["id"])
    snapshot = snapshot["message"]
    assert snapshot["status"] == "streaming" and snapshot["seq"] >= cut["seq"] + 3
    assert snapshot["content"].startswith(cut["content"]) and len(snapshot["content"]) > len(cut["content"])
    done_b, rest = await on_b.until(lambda f: f["type"] == "done", timeout=30)
    deltas = [f for f in rest if f["type"] == "delta"]
    assert [f["seq"] for f in deltas] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(deltas)))
    seen_on_b = snapshot["content"] + "".join(f["content"] for f in deltas)
    stored = await message(cut["id"])
    assert stored.status == "complete" and stored.content == seen_on_b == done_b["message"]["content"]
