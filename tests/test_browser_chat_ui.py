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
