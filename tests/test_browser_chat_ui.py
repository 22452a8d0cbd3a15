"""The chat page's own behaviour as a new user meets it (issue 16): real headless Chromium against a real daphne
process, the offline Kimi server behind it. Screenshots land in tests/artifacts/."""

from __future__ import annotations

import re

import pytest

from conversations.models import Conversation, Message
from conversations.services.billing import credits
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import choose_model, conversation_id_from_url, no_js_errors, send, wait_status

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
    page.wait_for_selector("#credits-notice:has-text('Not enough credits')")
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

    def message(role, content, parent=None):
        return Message.objects.create(
            conversation=conversation, role=role, content=content, status="complete", parent=parent
        )

    first_q = message("user", "Q1")
    first_a, first_a_again = message("assistant", "A1", first_q), message("assistant", "A1b", first_q)
    second_q = message("user", "Q2")  # an edit of Q1: a version beside it
    second_a = message("assistant", "A2", second_q)
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
    # Q1's branch is the active one now: its last answer can be regenerated.
    assert page.locator(".msg-assistant button[aria-label=Regenerate]").count() == 1
    screenshot(page, "versions-earlier-question")
    page.click(".msg-assistant button[aria-label='Previous version']")
    page.wait_for_function("() => document.querySelector('.msg-assistant .msg-content').textContent.trim() === 'A1'")
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


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_model_picker_names_groups_and_prices_models_and_works_by_keyboard(live_daphne, open_page, device):
    page = open_page("/", **(PHONE if device == "phone" else {}))
    picker = page.locator("#model-picker")
    assert picker.get_attribute("role") is None and picker.get_attribute("aria-haspopup") == "listbox"
    assert page.evaluate("() => document.querySelector('#model-picker').value") == "kimi-k2.6"
    assert picker.inner_text().strip() == "Kimi K2.6"
    picker.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#model-list[role=listbox]:not([hidden])")
    screenshot(page, f"model-picker-{device}")
    # Aliases share a group; each option says what it is for and what it costs.
    label = page.locator(".model-group-label").filter(has_text=re.compile(r"^\s*Kimi K2\s*$", re.I))
    k2 = page.locator("#model-list [role=group]").filter(has=label)
    assert k2.count() == 1
    assert k2.locator("[role=option]").count() >= 3
    k26 = page.locator("#model-list [role=option][data-value='kimi-k2.6']")
    assert k26.get_attribute("aria-selected") == "true"
    facts = k26.locator(".model-option-facts").inner_text()
    assert "Thinking on/off" in facts and "Vision" in facts and "256K context" in facts and "credits" in facts
    code = page.locator("#model-list [role=option][data-value='kimi-k2.7-code'] .model-option-facts").inner_text()
    assert "Code" in code
    # The active option follows the arrows; Enter chooses it, and focus returns to the button.
    assert page.evaluate("() => document.activeElement.id") == "model-list"
    active = page.evaluate("() => document.querySelector('#model-list').getAttribute('aria-activedescendant')")
    assert page.locator(f"#{active}").get_attribute("data-value") == "kimi-k2.6"
    page.keyboard.press("ArrowDown")
    following = page.evaluate(
        "() => document.getElementById(document.querySelector('#model-list')"
        ".getAttribute('aria-activedescendant')).dataset.value"
    )
    assert following != "kimi-k2.6"
    page.keyboard.press("Enter")
    page.wait_for_selector("#model-list", state="hidden")
    assert page.evaluate("() => document.activeElement.id") == "model-picker"
    assert page.evaluate("() => document.querySelector('#model-picker').value") == following
    # Escape closes the list without choosing.
    page.keyboard.press("ArrowDown")
    page.wait_for_selector("#model-list:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector("#model-list", state="hidden")
    assert page.evaluate("() => document.querySelector('#model-picker').value") == following
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    no_js_errors(page)


def test_model_switch_the_chat_settings_do_not_fit_is_refused_or_resets_them(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(
        owner=browser_user, title="Free temperature", model="moonshot-v1-8k", temperature=0.3
    )
    Message.objects.create(conversation=conversation, role="user", content="hi", status="complete")
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-user")
    choose_model(page, "kimi-k2.6")  # its temperature is fixed
    page.wait_for_selector("#confirm-dialog[open]")
    body = page.text_content("#confirm-dialog [data-body]")
    assert "Kimi K2.6" in body and "Temperature" in body and "fixed temperature" in body
    screenshot(page, "model-switch-refused")
    page.click("#confirm-dialog button[value=cancel]")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert page.evaluate("() => document.querySelector('#model-picker').value") == "moonshot-v1-8k"
    conversation.refresh_from_db()
    assert (conversation.model, conversation.temperature) == ("moonshot-v1-8k", 0.3)

    choose_model(page, "kimi-k2.6")
    page.click("#confirm-dialog button[value=ok]")
    page.wait_for_function("() => document.querySelector('#model-picker').value === 'kimi-k2.6'")
    conversation.refresh_from_db()
    assert (conversation.model, conversation.temperature) == ("kimi-k2.6", None)
    send(page, "still works [[tokens:3]]")
    assert wait_status(page) == "complete"
    no_js_errors(page)


def test_out_of_credits_shows_a_lasting_notice_and_the_price_shows_before_sending(live_daphne, browser_user, open_page):
    empty_balance(browser_user)
    page = open_page("/")
    notice = page.locator("#credits-notice")
    notice.wait_for()
    assert "out of credits" in notice.inner_text() and "0.00" in notice.inner_text()
    assert "who runs this server" in notice.inner_text()
    assert notice.locator("a[href='/usage/']").count() == 1
    price = page.text_content("#model-price")
    assert price.startswith("Kimi K2.6:") and "credits per" in price
    send(page, "hello [[tokens:5]]")
    page.wait_for_selector("#credits-notice:has-text('Not enough credits')")
    assert page.locator(".toast").count() == 0  # said once, and it stays
    screenshot(page, "credits-notice-desktop")
    phone = open_page("/", **PHONE)
    phone.wait_for_selector("#credits-notice")
    assert phone.is_visible("#model-price")
    screenshot(phone, "credits-notice-phone")
    credits.grant(browser_user, 50)
    page.click("#credits-notice [data-recheck]")
    page.wait_for_selector("#credits-notice", state="hidden")
    page.press("#prompt", "Enter")
    assert wait_status(page) == "complete"
    no_js_errors(page)


def test_copy_on_a_code_block_says_copied(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, title="Code", model="kimi-k2.6")
    Message.objects.create(conversation=conversation, role="user", content="code?", status="complete")
    Message.objects.create(
        conversation=conversation, role="assistant", content="```python\nprint(1)\n```", status="complete"
    )
    page = open_page(f"/c/{conversation.pk}/")
    button = page.locator(".codeblock .copy-code")
    assert button.inner_text() == "Copy"
    button.click()
    page.wait_for_function("() => document.querySelector('.codeblock .copy-code').textContent === 'Copied'")
    screenshot(page, "code-copied")
    no_js_errors(page)


def test_escape_closes_the_user_menu(live_daphne, open_page):
    page = open_page("/")
    page.click("#user-menu summary")
    assert page.evaluate("() => document.querySelector('#user-menu').open")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('#user-menu').open")
    assert page.evaluate("() => document.activeElement === document.querySelector('#user-menu summary')")


def test_the_phone_header_shows_the_chat_title(live_daphne, browser_user, open_page):
    conversation = Conversation.objects.create(owner=browser_user, title="Trip to Kyoto in April", model="kimi-k2.6")
    Message.objects.create(conversation=conversation, role="user", content="hi", status="complete")
    page = open_page(f"/c/{conversation.pk}/", **PHONE)
    page.wait_for_selector(".msg-user")
    title = page.locator("#chat-title")
    assert title.is_visible()
    box = title.bounding_box()
    assert box["width"] >= 80, box  # room for the start of the title, not a sliver
    header = page.locator(".chat-head").bounding_box()
    assert box["y"] >= header["y"] and box["y"] + box["height"] <= header["y"] + header["height"]
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(page, "phone-header-title")
    no_js_errors(page)


def test_new_chat_model_switch_resets_draft_settings_the_model_refuses(live_daphne, open_page):
    page = open_page("/")
    choose_model(page, "moonshot-v1-8k")
    page.click("#open-settings")
    page.fill("#settings-temperature", "0.3")
    page.fill("#settings-system", "Be brief.")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    choose_model(page, "kimi-k2.6")  # fixes its temperature
    page.wait_for_selector("#confirm-dialog[open]")
    assert "Temperature" in page.text_content("#confirm-dialog [data-body]")
    page.click("#confirm-dialog button[value=ok]")
    page.wait_for_function("() => document.querySelector('#model-picker').value === 'kimi-k2.6'")
    send(page, "hello [[tokens:3]]")
    conversation = Conversation.objects.get(pk=conversation_id_from_url(page))
    assert wait_status(page) == "complete"
    conversation.refresh_from_db()
    assert (conversation.model, conversation.temperature, conversation.system_prompt) == (
        "kimi-k2.6",
        None,
        "Be brief.",
    )
    no_js_errors(page)
