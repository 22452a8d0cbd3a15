"""Temporary chats as a person uses them: real headless Chromium, a real daphne process whose own reaper deletes the
chat once its tab is gone (a short grace, so the test sees it happen), the offline Kimi server behind it."""

from __future__ import annotations

import os
import time

import pytest

from conversations.models import Conversation, CreditTransaction, Message
from tests.daphne import start_daphne
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import conversation_id_from_url, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

GRACE = 4  # seconds a temporary chat outlives its last tab (TEMPORARY_CHAT_GRACE) in this test's server


@pytest.fixture
def live_daphne(transactional_db, offline_kimi, tmp_path):
    """As tests/fixtures/browser.py's, with a reaper that looks every half second and beats every second."""
    server = start_daphne(
        offline_kimi,
        tmp_path,
        REDIS_URL=os.environ.get("REDIS_URL", ""),
        TEMPORARY_CHAT_GRACE=str(GRACE),
        REAP_INTERVAL="0.5",
        HEARTBEAT_TTL="3",
    )
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_temporary_chat_resumes_on_reload_and_leaves_no_row_behind_once_closed(live_daphne, browser_user, open_page):
    page = open_page("/")
    page.click("#temp-toggle")
    assert page.get_attribute("#temp-toggle", "aria-pressed") == "true"
    assert page.is_visible("#temp-note")
    assert page.text_content("#chat-title") == "Temporary chat"
    send(page, "a private question [[tokens:60]] [[rate:25]]")
    conversation_id = conversation_id_from_url(page)
    assert Conversation.objects.get(pk=conversation_id).temporary
    page.wait_for_selector("#temp-badge:visible")
    assert page.is_hidden("#temp-toggle")
    page.wait_for_selector(".msg-assistant[data-status=streaming]")
    # Not in the sidebar, in this tab or after a reload.
    assert page.locator(f"#conv-list .conv-item[data-id='{conversation_id}']").count() == 0

    # A reload while the answer streams: the same chat, its answer resumed and finished.
    page.reload()
    page.wait_for_selector("html[data-ready]")
    page.wait_for_selector("#temp-badge:visible")
    assert page.locator(".msg-user .msg-content").text_content() == "a private question [[tokens:60]] [[rate:25]]"
    assert wait_status(page) == "complete"
    assert page.locator(f"#conv-list .conv-item[data-id='{conversation_id}']").count() == 0
    time.sleep(GRACE + 1.5)  # longer than the grace: the open tab keeps it alive
    assert Conversation.objects.filter(pk=conversation_id).exists()
    screenshot(page, "temporary-chat-desktop-light")
    no_js_errors(page)
    answer = Message.objects.get(conversation_id=conversation_id, role="assistant")

    page.close()  # the tab is closed: the server's reaper deletes the chat after the grace
    wait_until(lambda: not Conversation.objects.filter(pk=conversation_id).exists(), what="the chat to be deleted")
    assert not Message.objects.filter(conversation_id=conversation_id).exists()
    charge = CreditTransaction.objects.get(kind="charge", model=answer.model, completion_tokens__gt=0)
    assert charge.amount < 0 and charge.message_id is None and charge.state == "settled"


def test_leaving_a_temporary_chat_in_the_page_deletes_it_at_once(live_daphne, browser_user, open_page):
    page = open_page("/")
    page.click("#temp-toggle")
    send(page, "short [[tokens:5]]")
    conversation_id = conversation_id_from_url(page)
    wait_status(page)
    page.click("#new-chat")
    assert page.get_attribute("#temp-toggle", "aria-pressed") == "false"  # the next chat is kept again
    assert page.is_hidden("#temp-note")
    wait_until(lambda: not Conversation.objects.filter(pk=conversation_id).exists(), timeout=5, what="the delete")
    send(page, "kept [[tokens:5]]")
    kept = conversation_id_from_url(page)
    page.wait_for_selector(f"#conv-list .conv-item[data-id='{kept}']")
    assert not Conversation.objects.get(pk=kept).temporary
    no_js_errors(page)
