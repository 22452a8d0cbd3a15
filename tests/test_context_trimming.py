"""What goes upstream when a conversation outgrows the window: a stable prefix (system prompt and opening turns) and
the newest turns, the middle dropped in large steps, so consecutive sends share a prefix that Kimi can cache."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.services.billing.pricing import set_price
from conversations.services.chat.context import build_messages, context_window

MODEL = "moonshot-v1-8k"  # a small window: a few dozen turns outgrow it


def turn_pairs(count: int) -> list[Message]:
    thread = []
    for i in range(count):
        thread.append(Message(role=Message.Role.USER, content=f"question {i}: " + "tell me more " * 15))
        thread.append(Message(role=Message.Role.ASSISTANT, content=f"answer {i}: " + "here is more " * 25))
    return thread


def sent_for(thread: list[Message], question: str) -> list[dict]:
    messages, _tokens = build_messages(
        [*thread, Message(role=Message.Role.USER, content=question)],
        model=MODEL,
        system_prompt="You are a patient tutor.",
        max_tokens=None,
        thinks=False,
    )
    return messages


def test_successive_sends_in_a_long_conversation_keep_an_identical_prefix():
    thread = turn_pairs(100)
    sends = [sent_for(thread[: 2 * n], f"follow-up {n}") for n in range(60, 100)]
    assert all(len(s) < 2 * n + 2 for s, n in zip(sends, range(60, 100), strict=True))  # trimmed, every one
    for sent in sends:
        assert sent[0] == {"role": "system", "content": "You are a patient tutor."}
        assert sent[1]["content"].startswith("question 0:") and sent[2]["content"].startswith("answer 0:")
        assert sent[3]["role"] == "user" and sent[-1]["content"].startswith("follow-up")
    # The next send repeats every message of this one but its last: the prompt cache serves them. Only when the
    # gap takes its next step does the prefix change; dropping the oldest turn each time would change it every time.
    changed = sum(later[: len(earlier) - 1] != earlier[:-1] for earlier, later in pairwise(sends))
    assert changed <= 4, changed  # 40 turns of about 120 tokens, steps of a quarter of the 6,144-token budget


def test_a_conversation_that_fits_is_sent_whole_and_the_newest_turn_always_goes():
    thread = turn_pairs(3)
    assert len(sent_for(thread, "short")) == 1 + 6 + 1
    huge_head = [Message(role=Message.Role.USER, content="x" * 4 * 7000), *turn_pairs(2)[1:]]
    sent = sent_for(huge_head, "newest")
    assert sent[-1]["content"] == "newest" and all("x" * 100 not in m["content"] for m in sent)
    assert sum(len(m["content"]) for m in sent) // 4 < context_window(MODEL)


@pytest.mark.django_db(transaction=True)
async def test_the_offline_server_serves_the_second_trimmed_send_from_its_cache(connect, owner, chat_settings):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model=MODEL)
    for message in turn_pairs(80):
        message.conversation = conversation
        message.status = Message.Status.COMPLETE
        await sync_to_async(message.save)()
    # Cached prompt tokens are billed at the cached price (they are part of prompt_tokens).
    await sync_to_async(set_price)(
        MODEL, per_million_prompt="100", per_million_cached="10", per_million_completion="200"
    )
    tab = await connect(owner)
    sent, usages, costs = [], [], []
    for i in range(3):  # follow-ups as long as the turns before them: each one outgrows the window again
        await tab.say(f"follow-up {i} [[tokens:60]] " + "explain that again " * 25, conversation_id=conversation.pk)
        done, _ = await tab.answer()
        assert done["status"] == "complete", done
        sent.append(chat_settings.last_request_body["messages"])
        usages.append(done["message"]["usage"])
        costs.append(Decimal(done["message"]["cost"]))
    assert all(len(s) < 2 * 80 + 1 for s in sent)  # trimmed, every one
    assert sent[1][: len(sent[0])] == sent[0] and sent[2][: len(sent[1])] == sent[1]  # the same leading messages
    assert usages[0]["cached_tokens"] == 0
    assert usages[1]["cached_tokens"] > 256 and usages[2]["cached_tokens"] > usages[1]["cached_tokens"]
    usage = usages[2]
    fresh = usage["prompt_tokens"] - usage["cached_tokens"]
    assert costs[2] == (fresh * 100 + usage["cached_tokens"] * 10 + usage["completion_tokens"] * 200) / Decimal(10**6)
