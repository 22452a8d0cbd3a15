"""The app always sends an output budget (issue 17): on the seed-003 provider (kimi-k2.ai), which cuts an answer at
1,024 tokens when a request names no limit, a long answer of a chat with no length setting is not cut there."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_on_the_seed_003_provider_a_long_answer_is_not_cut_at_1024_tokens(
    connect, owner, chat_settings, settings, offline_kimi_profile
):
    k2ai = offline_kimi_profile("kimi-k2.ai")
    settings.KIMI_BASE_URL = k2ai.base_url
    settings.KIMI_PROVIDER = "kimi-k2.ai"
    tab = await connect(owner)
    await tab.say("write at length [[tokens:1500]]", model="kimi-k2")
    done, _ = await tab.answer(timeout=60)
    sent = k2ai.log.last_request_body
    assert sent["max_tokens"] == 8192 and "max_completion_tokens" not in sent  # S003 documents max_tokens, ≤ 8,192
    assert done["status"] == "complete" and done["finish_reason"] == "stop", done
    assert done["usage"]["completion_tokens"] >= 1500


async def test_without_the_budget_the_seed_003_provider_would_cut_it(owner, offline_kimi_profile, make_kimi_client):
    """The provider's behaviour the test above depends on: no limit sent, cut at its default of 1,024 tokens."""
    from contextlib import aclosing

    from conversations.kimi.events import Finish
    from conversations.kimi.params import ChatRequest

    k2ai = offline_kimi_profile("kimi-k2.ai")
    client = make_kimi_client(base_url=k2ai.base_url, provider="kimi-k2.ai")
    finish = None
    async with aclosing(
        client.stream_chat(ChatRequest("kimi-k2", [{"role": "user", "content": "[[tokens:1500]]"}]))
    ) as events:
        async for event in events:
            if isinstance(event, Finish):
                finish = event.reason
    assert finish == "length"
