"""The chat page's own behaviour as a new user meets it (issue 16): real headless Chromium against a real daphne
process, the offline Kimi server behind it. Screenshots land in tests/artifacts/."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Message
from conversations.services.billing import credits
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import conversation_id_from_url, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def empty_balance(user) -> None:
    credits.adjust(user, -credits.get_balance(user), created_by=user, note="test: spend everything")


def test_new_chat_settings_survive_a_refused_first_send(live_daphne, browser_user, open_page, offline_kimi):
    empty_balance(browser_user)
    page = open_page("/")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    page.fill("#settings-system", "Answer like a pirate.")
    page.fill("#settings-max_tokens", "256")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    send(page, "hello [[tokens:5]]")
    page.wait_for_selector(".toast.error")
    assert not Conversation.objects.exists()
    # The refused text is back in the composer; with credits the same send goes through.
    credits.grant(browser_user, 100)
    page.wait_for_function("() => document.querySelector('#prompt').value === 'hello [[tokens:5]]'")
    page.press("#prompt", "Enter")
    conversation = Conversation.objects.get(pk=conversation_id_from_url(page))
    wait_status(page)
    conversation.refresh_from_db()
    assert (conversation.system_prompt, conversation.max_tokens) == ("Answer like a pirate.", 256)
    assert offline_kimi.last_request_body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    no_js_errors(page)


def shown_turn(page) -> tuple[str, str]:
    return (page.text_content(".msg-user .msg-content"), page.text_content(".msg-assistant .msg-content").strip())


def test_version_arrows_keep_each_question_with_its_own_answers(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, title="Versions", model="kimi-k2.6")

    def message(role, content):
        return Message.objects.create(conversation=conversation, role=role, content=content, status="complete")

    first_q, first_a, first_a_again = message("user", "Q1"), message("assistant", "A1"), message("assistant", "A1b")
    second_q, second_a = message("user", "Q2"), message("assistant", "A2")
    # An edit supersedes the question and its answer; the regenerate before it superseded only the answer.
    Message.objects.filter(pk=first_q.pk).update(superseded_by=second_q)
    Message.objects.filter(pk=first_a.pk).update(superseded_by=first_a_again)
    Message.objects.filter(pk=first_a_again.pk).update(superseded_by=second_a)

    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-assistant")
    assert shown_turn(page) == ("Q2", "A2")
    assert page.is_hidden(".msg-assistant .versions")  # Q2 has one answer
    assert page.is_visible(".msg-assistant button[aria-label=Regenerate]")

    page.click(".msg-user button[aria-label='Previous version']")
    page.wait_for_selector(".msg-user .msg-content:text-is('Q1')")
    assert shown_turn(page) == ("Q1", "A1b")
    assert page.text_content(".msg-assistant .version-count").strip() == "2 / 2"
    # Regenerate acts on the latest question: not offered beside an earlier one.
    assert page.locator(".msg-assistant button[aria-label=Regenerate]").count() == 0
    screenshot(page, "versions-earlier-question")
    page.click(".msg-assistant button[aria-label='Previous version']")
    assert shown_turn(page) == ("Q1", "A1")

    page.click(".msg-user button[aria-label='Next version']")
    page.wait_for_selector(".msg-user .msg-content:text-is('Q2')")
    assert shown_turn(page) == ("Q2", "A2")
    no_js_errors(page)


TOAST_PLACEMENT = """() => {
  const toast = document.querySelector('.toast').getBoundingClientRect();
  const composer = document.querySelector('.composer-box').getBoundingClientRect();
  const column = document.querySelector('.main').getBoundingClientRect();
  return {gap: composer.top - toast.bottom, offCenter: Math.abs((toast.left + toast.right) / 2
          - (column.left + column.right) / 2)};
}"""


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_toasts_sit_above_the_composer_centered_on_the_chat_column(live_daphne, open_page, device):
    page = open_page("/", **(PHONE if device == "phone" else {}))
    page.fill("#prompt", "a draft the toast must not hide")
    page.click("#open-settings")
    page.click("#settings-form button[type=submit]")  # answers with a toast: the settings apply to the new chat
    page.wait_for_selector(".toast")
    placement = page.evaluate(TOAST_PLACEMENT)
    screenshot(page, f"toast-{device}")
    assert placement["gap"] >= 0, placement  # the toast ends above the composer: the typed text stays visible
    assert placement["offCenter"] <= 2, placement
