""" "Thought for N s": how long a thinking model thought before it wrote the answer is stored with the answer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_the_thinking_time_is_stored_and_published(connect, owner):
    tab = await connect(owner)
    # 40 tokens at 100 per second: the reasoning part alone takes a good part of the 0.4 s.
    await tab.say("think first [[tokens:40]] [[rate:100]]", model="kimi-k2-thinking")
    done, frames = await tab.answer()
    reasoning = [f for f in frames if f["type"] == "delta" and f["reasoning"]]
    assert reasoning and done["message"]["content"]
    stored = await sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert stored.reasoning_ms is not None and 50 <= stored.reasoning_ms <= 5000
    assert done["message"]["reasoning_ms"] == stored.reasoning_ms


async def test_an_answer_that_does_not_think_has_no_thinking_time(connect, owner):
    tab = await connect(owner)
    await tab.say("just answer [[tokens:10]]", model="kimi-k2")
    done, _ = await tab.answer()
    assert done["message"]["reasoning"] == "" and done["message"]["reasoning_ms"] is None
