"""Browser tests of the rest of the chat page: share links, import, and an answer that fails and is retried."""

from __future__ import annotations

import json

import pytest

from conversations.models import Conversation, Message, SharedLink
from tests.test_browser_chat import (
    LAST_ANSWER,
    conversation_id_from_url,
    make_conversation,
    no_js_errors,
    send,
    wait_status,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_share_link_create_copy_and_revoke(live_daphne, browser_user, open_page):
    conversation = make_conversation(
        browser_user, "Share me", ("user", "What is the capital of Peru?"), ("assistant", "Lima.")
    )
    page = open_page("/")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click(f'.conv-item[data-id="{conversation.pk}"] .conv-more')
    page.click("#conv-menu [data-action=share]")
    page.wait_for_selector("#share-dialog[open]")
    assert page.text_content("#share-dialog [data-title]") == "Share me"
    page.click("#share-dialog [data-create]")
    page.wait_for_selector("#share-dialog .share-url")
    url = page.input_value("#share-dialog .share-url")
    link = SharedLink.objects.get(conversation=conversation)
    assert link.token in url and url.startswith(live_daphne.url)
    assert page.evaluate("() => navigator.clipboard.readText()") == url

    # The link works for someone who is not logged in.
    anonymous = page.context.browser.new_context()
    try:
        shared = anonymous.new_page()
        shared.goto(url)
        assert "Lima." in shared.text_content("body")
    finally:
        anonymous.close()

    page.click("#share-dialog .share-row .danger")
    page.wait_for_selector("#share-dialog .share-url", state="detached")
    assert not SharedLink.objects.filter(pk=link.pk, revoked_at__isnull=True).exists()
    no_js_errors(page)


def test_import_a_json_export(live_daphne, browser_user, open_page, tmp_path):
    original = make_conversation(
        browser_user, "Round trip", ("user", "Ping?"), ("assistant", "Pong, from an exported chat.")
    )
    page = open_page("/")
    page.click(f'.conv-item[data-id="{original.pk}"] .conv-more')
    with page.expect_download() as download_info:
        page.click("#conv-menu [data-action=export-json]")
    exported = tmp_path / "export.json"
    download_info.value.save_as(exported)
    json.loads(exported.read_text())

    with page.expect_file_chooser() as chooser_info:
        page.click("#import-button")
    chooser_info.value.set_files(str(exported))
    page.wait_for_selector(".toast:has-text('Imported 1 chat.')")
    page.wait_for_function(
        "id => /^\\/c\\/\\d+\\/$/.test(location.pathname) && location.pathname !== `/c/${id}/`", arg=original.pk
    )
    page.wait_for_selector(".msg-assistant:has-text('Pong, from an exported chat.')")
    assert Conversation.objects.filter(owner=browser_user).count() == 2
    no_js_errors(page)


def test_failed_answer_shows_the_reason_and_retries(live_daphne, open_page):
    page = open_page("/")
    send(page, "This one breaks [[fault:error_midstream]] [[tokens:40]]")
    conversation_id = conversation_id_from_url(page)
    status = wait_status(page)
    assert status in ("error", "interrupted")
    page.wait_for_selector(f"{LAST_ANSWER} >> .msg-error")
    reason = page.text_content(f"{LAST_ANSWER} >> .msg-error")
    stored = Message.objects.get(conversation_id=conversation_id, role="assistant", superseded_by__isnull=True)
    assert stored.status == status
    assert stored.error_message and stored.error_message in reason
    assert page.locator(f"{LAST_ANSWER} >> .badge-{status}").count() == 1

    # Retry answers the same question again (a regenerate): the failed answer stays as version 1.
    page.click(f"{LAST_ANSWER} >> .msg-error button:has-text('Retry')")
    page.wait_for_function(
        "() => { const v = document.querySelector('.msg-assistant .version-count');"
        " return v && v.textContent.trim() === '2 / 2'; }"
    )
    wait_status(page)  # the marker is still in the prompt, so this answer fails the same way
    answers = Message.objects.filter(conversation_id=conversation_id, role="assistant").order_by("id")
    assert len(answers) == 2 and answers[0].superseded_by_id == answers[1].pk
    page.click(f"{LAST_ANSWER} >> button[aria-label='Previous version']")
    page.wait_for_function(
        "() => document.querySelector('.msg-assistant .version-count').textContent.trim() === '1 / 2'"
    )
    no_js_errors(page)
