"""The chat page shows what Kimi really did: answers cut off by their budget (with Continue), answers that only
thought, cached prompt tokens, and kimi-k3's reasoning effort in the settings. Real Chromium, real daphne."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Message
from tests.test_browser_chat import LAST_ANSWER, answer_text, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait_badge_gone_and_complete(page) -> None:
    page.wait_for_function(
        "() => { const els = document.querySelectorAll('.msg-assistant'); const last = els[els.length - 1];"
        " return last && last.dataset.status === 'complete' && !last.querySelector('.badge-cut-off'); }",
        timeout=20000,
    )


def test_a_cut_off_answer_says_so_and_continue_extends_it_in_place(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k2-turbo-preview", max_tokens=15)
    page = open_page(f"/c/{conversation.pk}/")
    send(page, "A long one [[tokens:60]]")
    assert wait_status(page) == "complete"
    assert page.text_content(f"{LAST_ANSWER} >> .badge-cut-off") == "Cut off"
    before = answer_text(page)

    page.click(f"{LAST_ANSWER} >> button.continue-answer")
    wait_badge_gone_and_complete(page)
    after = answer_text(page)
    [answer] = Message.objects.filter(conversation=conversation, role="assistant")
    assert answer.finish_reason == "stop" and len(answer.content) > len(before)
    assert page.locator(".msg-assistant").count() == 1  # the same answer, extended
    assert after.startswith(before.strip()[:20]) and before.strip()[:20] not in after[20:]

    page.reload()
    page.wait_for_selector(".msg-assistant")
    assert page.locator(".badge-cut-off").count() == 0 and page.locator("button.continue-answer").count() == 0
    no_js_errors(page)


def test_an_answer_that_only_thought_says_so_and_continues(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k2.6", max_tokens=8)
    page = open_page(f"/c/{conversation.pk}/")
    send(page, "Think first [[tokens:30]]")
    assert wait_status(page) == "complete"
    page.wait_for_selector(f"{LAST_ANSWER} >> .cut-off-note")
    assert page.text_content(f"{LAST_ANSWER} >> .cut-off-note") == "Thought, but ran out of room before answering"

    page.reload()  # the same after a reload, from the stored answer
    page.wait_for_selector(f"{LAST_ANSWER} >> .cut-off-note")
    page.click(f"{LAST_ANSWER} >> button.continue-answer")
    wait_badge_gone_and_complete(page)
    assert page.locator(".cut-off-note").count() == 0 and answer_text(page).strip()
    no_js_errors(page)


def test_the_footer_shows_cached_prompt_tokens(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k2.6", title="Cached")
    Message.objects.create(conversation=conversation, role="user", content="hi", status="complete")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="hello",
        status="complete",
        finish_reason="stop",
        prompt_tokens=1200,
        completion_tokens=30,
        total_tokens=1230,
        cached_tokens=1024,
    )
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(f"{LAST_ANSWER} >> .usage-cached")
    assert page.text_content(f"{LAST_ANSWER} >> .usage-cached") == "1024 cached"
    assert "1024 cached" in page.get_attribute(f"{LAST_ANSWER} >> .usage", "data-tip")
    no_js_errors(page)


def test_settings_offer_the_reasoning_effort_only_where_the_model_has_choices(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k3", title="Effort")
    Message.objects.create(conversation=conversation, role="user", content="hi", status="complete")
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-user")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    assert page.is_visible("#settings-reasoning_effort")
    options = page.eval_on_selector_all("#settings-reasoning_effort option", "els => els.map(e => e.value)")
    assert options == ["", "low", "high", "max"]
    assert page.text_content("#settings-reasoning_effort option >> nth=0") == "Model default (Max)"
    assert page.is_hidden("#settings-thinking") and page.is_visible("#note-thinking-always")
    assert "Fixed by this model" in page.text_content("#row-temperature")
    page.select_option("#settings-reasoning_effort", "low")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    conversation.refresh_from_db()
    assert conversation.reasoning_effort == "low"

    other = Conversation.objects.create(owner=browser_user, model="kimi-k2.6", title="No effort")
    Message.objects.create(conversation=other, role="user", content="hi", status="complete")
    page.goto(f"{live_daphne.url}/c/{other.pk}/")
    page.wait_for_selector(".msg-user")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    assert page.is_hidden("#settings-reasoning_effort") and page.is_visible("#settings-thinking")
    no_js_errors(page)
