"""Small things people notice (issue 22): the scroll-to-bottom button, "Thought for N s", the "?" shortcuts
dialog, ↑ to edit the last message, month groups in the sidebar, task lists / tables / footnotes (chat and share
page alike), the installable web app. Real headless Chromium against a real daphne process."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.history import shares
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import choose_model, make_conversation, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

RICH = """Plan:

- [x] write the tests
- [ ] ship it

| Feature | Status |
|:--------|-------:|
| Tables  | done   |

Markdown has footnotes[^note] too.

[^note]: Like this one.
"""


def test_the_scroll_button_appears_when_scrolled_up_during_an_answer_and_scrolls_down(
    live_daphne, browser_user, open_page
):
    page = open_page("/", viewport={"width": 1280, "height": 600})
    send(page, "a long answer [[tokens:600]] [[rate:120]]")
    page.wait_for_function(
        "() => { const t = document.getElementById('thread'); return t.scrollHeight > t.clientHeight + 300; }"
    )
    assert page.is_hidden("#scroll-bottom")  # following the answer at the bottom: no button
    page.eval_on_selector("#thread", "t => { t.scrollTop = 0; }")
    page.wait_for_selector("#scroll-bottom:visible")
    assert "streaming" in page.get_attribute("#scroll-bottom", "class")
    screenshot(page, "scroll-button-desktop-light")
    assert page.eval_on_selector(".msg-assistant", "n => n.dataset.status") == "streaming"
    # Scrolled up, the answer goes on without dragging the reader down.
    page.wait_for_timeout(500)
    assert page.eval_on_selector("#thread", "t => t.scrollTop") == 0
    page.click("#scroll-bottom")
    page.wait_for_function(
        "() => { const t = document.getElementById('thread');"
        " return t.scrollHeight - t.scrollTop - t.clientHeight < 80; }"
    )
    page.wait_for_selector("#scroll-bottom", state="hidden")
    wait_status(page)
    no_js_errors(page)


def test_thought_for_n_seconds_while_streaming_and_after_a_reload(live_daphne, browser_user, open_page):
    page = open_page("/")
    choose_model(page, "kimi-k2-thinking")
    send(page, "think about it [[tokens:60]] [[rate:30]]")
    page.wait_for_selector(".thinking-label:has-text('Thinking…')")
    wait_status(page)
    label = page.text_content(".msg-assistant .thinking-label")
    assert re.fullmatch(r"Thought for \d+ s", label), label
    stored = Message.objects.get(role="assistant")
    assert stored.reasoning_ms and stored.reasoning_ms >= 500
    page.reload()
    page.wait_for_selector("html[data-ready]")
    expected = f"Thought for {max(1, round(stored.reasoning_ms / 1000))} s"
    page.wait_for_selector(f".msg-assistant .thinking-label:has-text('{expected}')")
    no_js_errors(page)


def test_question_mark_opens_the_shortcuts_but_not_while_typing(live_daphne, browser_user, open_page):
    page = open_page("/")
    page.click("#prompt")
    page.keyboard.type("why?")
    assert page.input_value("#prompt") == "why?"
    assert page.is_hidden("#keys-dialog")
    page.click("#chat-title")  # out of the composer
    page.keyboard.press("?")
    page.wait_for_selector("#keys-dialog[open]")
    assert "Edit your last message" in page.text_content("#keys-dialog")
    page.keyboard.press("Escape")
    page.wait_for_selector("#keys-dialog", state="hidden")
    no_js_errors(page)


def test_arrow_up_in_the_empty_composer_edits_the_last_message(live_daphne, browser_user, open_page):
    conversation = make_conversation(
        browser_user,
        "Edit me",
        ("user", "first question"),
        ("assistant", "A1"),
        ("user", "second question"),
        ("assistant", "A2"),
    )
    page = open_page(f"/c/{conversation.pk}/")
    page.click("#prompt")
    page.keyboard.type("x")
    page.keyboard.press("ArrowUp")  # not empty: the caret just moves
    assert page.locator(".edit-area").count() == 0
    page.fill("#prompt", "")
    page.keyboard.press("ArrowUp")
    page.wait_for_selector(".edit-area")
    assert page.input_value(".edit-area") == "second question"
    assert page.evaluate("() => document.activeElement.classList.contains('edit-area')")
    page.keyboard.press("End")
    page.keyboard.type(" (edited) [[tokens:5]]")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg-user .msg-content:has-text('second question (edited)')")
    wait_status(page)
    assert Message.objects.filter(role="user", content="second question (edited) [[tokens:5]]").exists()
    no_js_errors(page)


def test_the_sidebar_groups_older_chats_by_month(live_daphne, browser_user, open_page):
    now = timezone.now()
    ages = {"today": 0, "yesterday": 1, "week": 4, "month": 20, "older-1": 45, "older-2": 80, "last-year": 400}
    for title, days in ages.items():
        when = now - timedelta(days=days)
        Conversation.objects.create(owner=browser_user, title=title, model="kimi-k2.6", updated_at=when)
    page = open_page("/")
    page.wait_for_selector(".conv-item:has-text('last-year')")
    titles = page.eval_on_selector_all("#conv-list .conv-group-title", "els => els.map(e => e.textContent)")

    def month(days: int) -> str:
        local = datetime.fromtimestamp((now - timedelta(days=days)).timestamp())  # the browser's zone is the host's
        return local.strftime("%B %Y")

    expected = ["Today", "Yesterday", "Previous 7 days", "Previous 30 days"]
    for days in (45, 80, 400):
        if month(days) not in expected:
            expected.append(month(days))
    assert titles == expected
    screenshot(page, "month-groups-desktop-light")
    no_js_errors(page)


def test_month_groups_are_named_in_the_pages_language(live_daphne, browser_user, open_page):
    Conversation.objects.create(
        owner=browser_user, title="old", model="kimi-k2.6", updated_at=timezone.now() - timedelta(days=70)
    )
    page = open_page("/", locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    page.wait_for_selector(".conv-item")
    titles = page.eval_on_selector_all("#conv-list .conv-group-title", "els => els.map(e => e.textContent)")
    assert re.fullmatch(r"\d{4}年\d{1,2}月", titles[-1]), titles


def _markdown_structure(page, scope: str) -> dict:
    return page.eval_on_selector(
        scope,
        """root => ({
          tasks: [...root.querySelectorAll('li .task-box')].map(b => [b.classList.contains('task-done'),
                  b.getAttribute('aria-label'), b.closest('li').textContent.trim()]),
          inputs: root.querySelectorAll('input').length,
          headers: [...root.querySelectorAll('table th')].map(th => th.textContent),
          align: [...root.querySelectorAll('table td')].map(td => getComputedStyle(td).textAlign),
          ref: root.querySelector('sup.footnote-ref a').textContent,
          refTarget: root.querySelector('sup.footnote-ref a').getAttribute('href'),
          note: root.querySelector('section.footnotes li').textContent.trim(),
          noteId: root.querySelector('section.footnotes li').id,
          backTarget: root.querySelector('.footnote-backref').getAttribute('href'),
          backNewTab: root.querySelector('.footnote-backref').getAttribute('target'),
        })""",
    )


def test_task_lists_tables_and_footnotes_render_alike_in_the_chat_and_on_the_share_page(
    live_daphne, browser_user, open_page
):
    conversation = make_conversation(browser_user, "Rich", ("user", "show me"), ("assistant", RICH))
    answer = conversation.messages.get(role="assistant")
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-assistant .footnotes")
    chat = _markdown_structure(page, ".msg-assistant .msg-content")
    assert chat == {
        "tasks": [[True, "Done", "write the tests"], [False, "Not done", "ship it"]],
        "inputs": 0,
        "headers": ["Feature", "Status"],
        "align": ["left", "right"],
        "ref": "[1]",
        "refTarget": f"#fn-{answer.pk}-1",
        "note": "Like this one. ↩︎",
        "noteId": f"fn-{answer.pk}-1",
        "backTarget": f"#fnref-{answer.pk}-1",
        "backNewTab": None,
    }
    # A footnote link moves within the message and leaves the address alone.
    page.click("sup.footnote-ref a")
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/c/{conversation.pk}/")
    assert page.locator(".msg-assistant").count() == 1

    link = shares.create_share(conversation)
    shared = open_page(f"/s/{link.token}/", login=False)
    shared.wait_for_selector(".msg-assistant .footnotes")
    assert _markdown_structure(shared, ".msg-assistant .msg-content") == chat
    no_js_errors(page)
    no_js_errors(shared)


def test_the_web_app_manifest_is_linked_served_and_its_icons_exist(live_daphne, open_page):
    page = open_page("/")
    href = page.get_attribute("link[rel=manifest]", "href")
    assert href == "/manifest.webmanifest"
    assert page.get_attribute("meta[name=theme-color][media*=dark]", "content") == "#16181d"
    response = page.request.get(live_daphne.url + href)
    assert response.status == 200
    assert response.headers["content-type"] == "application/manifest+json"
    manifest = json.loads(response.text())
    assert (manifest["name"], manifest["display"], manifest["start_url"]) == ("KimiChat", "standalone", "/")
    sizes = {(icon["sizes"], icon["purpose"]) for icon in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes
    for icon in manifest["icons"]:
        fetched = page.request.get(live_daphne.url + icon["src"])
        assert fetched.status == 200 and fetched.headers["content-type"] == icon["type"], icon
    # Browsers fetch a manifest without cookies: it is public.
    logged_out = open_page("/manifest.webmanifest", login=False)
    assert json.loads(logged_out.text_content("body"))["short_name"] == "KimiChat"
    # Chromium reads it as an installable app's manifest, with no errors.
    cdp = page.context.new_cdp_session(page)
    errors = cdp.send("Page.getAppManifest")["errors"]
    assert errors == [], errors
    no_js_errors(page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_screenshots_of_the_new_details(live_daphne, browser_user, open_page, scheme, device):
    """Looked at by a person (tests/artifacts/): the rich answer, the temporary toggle and note, the shortcuts."""
    conversation = make_conversation(browser_user, "Rich answer", ("user", "show me"), ("assistant", RICH))
    Message.objects.filter(conversation=conversation, role="assistant").update(
        reasoning="Let me think about the plan.", reasoning_ms=12_400
    )
    options = dict(PHONE) if device == "phone" else {"viewport": {"width": 1280, "height": 800}}
    page = open_page(f"/c/{conversation.pk}/", color_scheme=scheme, **options)
    page.wait_for_selector(".msg-assistant .footnotes")
    assert page.text_content(".msg-assistant .thinking-label") == "Thought for 12 s"
    screenshot(page, f"details-chat-{device}-{scheme}")
    page.click("#new-chat") if device == "desktop" else page.evaluate("() => window.kimichat.newChat()")
    page.click("#temp-toggle")
    page.wait_for_selector("#temp-note:visible")
    screenshot(page, f"details-temporary-{device}-{scheme}")
    page.click("#chat-title")
    page.keyboard.press("?")
    page.wait_for_selector("#keys-dialog[open]")
    screenshot(page, f"details-shortcuts-{device}-{scheme}")
    no_js_errors(page)
