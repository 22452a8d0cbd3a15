"""The chat page end to end: real headless Chromium against a real daphne process (websockets included), the
offline Kimi server behind it, and the test database shared by both."""

from __future__ import annotations

import json
import re
import time

import pytest

from conversations.models import Conversation, Message
from tests.conftest import PASSWORD
from tests.fixtures.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAST_ANSWER = ".msg-assistant >> nth=-1"
FINAL = ("complete", "stopped", "error", "interrupted")


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def answer_text(page) -> str:
    return page.eval_on_selector_all(
        ".msg-assistant .msg-content", "els => els.length ? els[els.length - 1].textContent : ''"
    )


def answer_status(page) -> str:
    return page.eval_on_selector_all(".msg-assistant", "els => els.length ? els[els.length - 1].dataset.status : ''")


def wait_status(page, statuses=FINAL, timeout=20000) -> str:
    page.wait_for_function(
        "statuses => { const els = document.querySelectorAll('.msg-assistant');"
        " return els.length && statuses.includes(els[els.length - 1].dataset.status); }",
        arg=list(statuses),
        timeout=timeout,
    )
    return answer_status(page)


def wait_text(page, minimum: int = 1, timeout=15000) -> None:
    page.wait_for_function(
        "n => { const els = document.querySelectorAll('.msg-assistant .msg-content');"
        " return els.length && els[els.length - 1].textContent.length >= n; }",
        arg=minimum,
        timeout=timeout,
    )


def conversation_id_from_url(page) -> int:
    try:
        page.wait_for_function("() => /^\\/c\\/\\d+\\/$/.test(location.pathname)")
    except Exception:
        toasts = page.eval_on_selector_all(".toast", "els => els.map(e => e.textContent)")
        raise AssertionError(f"no conversation was created; toasts: {toasts}") from None
    return int(re.search(r"/c/(\d+)/$", page.url).group(1))


def model_ids(page) -> list[str]:
    return page.eval_on_selector_all("#model-list [role=option]", "els => els.map(e => e.dataset.value)")


def choose_model(page, model: str) -> None:
    """Pick ``model`` in the model picker's listbox, as a person does."""
    page.click("#model-picker")
    page.click(f"#model-list [role=option][data-value='{model}']")


def no_js_errors(page) -> None:
    assert page.js_errors == [], page.js_errors


def make_conversation(user, title: str, *messages: tuple[str, str], **fields) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title=title, model="kimi-k2.6", **fields)
    for role, content in messages:
        Message.objects.create(conversation=conversation, role=role, content=content, status="complete")
    return conversation


def test_log_in_send_and_watch_the_answer_grow(chromium, live_daphne, browser_user, open_page):
    page = open_page("/", login=False)
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", browser_user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_selector("#prompt")
    page.wait_for_function("() => document.querySelector('#balance [data-amount]').textContent !== '—'")
    balance_before = page.text_content("#balance [data-amount]")

    # The send button is disabled until there is text; Shift+Enter adds a line instead of sending.
    assert page.is_disabled("#send")
    page.fill("#prompt", "first line")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "second line [[tokens:320]] [[rate:120]]")
    assert page.input_value("#prompt") == "first line\nsecond line [[tokens:320]] [[rate:120]]"
    # Enter right away, perhaps before the page has finished opening its (new) chat: the message is sent when it has.
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.querySelector('#prompt').value === ''")

    conversation_id = conversation_id_from_url(page)
    page.wait_for_selector("#stop:not([hidden])")
    lengths = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and answer_status(page) not in FINAL:
        lengths.append(len(answer_text(page)))
        page.wait_for_timeout(120)
    growing = [n for i, n in enumerate(lengths) if n > 0 and (i == 0 or n > lengths[i - 1])]
    assert len(growing) >= 3, f"the answer did not visibly grow while streaming: {lengths}"

    assert wait_status(page) == "complete"
    page.wait_for_selector("#send:not([hidden])")
    stored = Message.objects.get(conversation_id=conversation_id, role="assistant")
    assert stored.status == "complete" and stored.content
    # Rendered as Markdown, and the same words as stored.
    shown = " ".join(answer_text(page).split())
    assert shown[:40] in " ".join(stored.content.replace("*", "").replace("`", "").split())
    # kimi-k2.6 thinks first: the reasoning is kept in a block above the answer, folded once the answer began.
    assert stored.reasoning
    assert page.is_visible(f"{LAST_ANSWER} >> .thinking summary")
    assert page.get_attribute(f"{LAST_ANSWER} >> .thinking", "open") is None
    assert page.is_hidden(f"{LAST_ANSWER} >> .thinking-text")
    page.click(f"{LAST_ANSWER} >> .thinking summary")
    assert page.text_content(f"{LAST_ANSWER} >> .thinking-text") == stored.reasoning
    user_bubble = page.text_content(".msg-user .msg-content")
    assert user_bubble == "first line\nsecond line [[tokens:320]] [[rate:120]]"
    # Usage and cost on hover, the balance updated from the done frame, the chat listed in the sidebar.
    tip = page.get_attribute(f"{LAST_ANSWER} >> .usage", "data-tip")
    assert "Tokens:" in tip and "Cost:" in tip
    page.wait_for_function(
        "b => document.querySelector('#balance [data-amount]').textContent !== b", arg=balance_before
    )
    assert page.locator(f'.conv-item[data-id="{conversation_id}"]').count() == 1
    assert page.get_attribute(f'.conv-item[data-id="{conversation_id}"]', "aria-current") == "page"
    no_js_errors(page)


def test_stop_button_and_escape_stop_the_answer(live_daphne, open_page):
    page = open_page("/")
    send(page, "Tell me a long story [[tokens:3000]] [[rate:60]]")
    conversation_id = conversation_id_from_url(page)
    wait_text(page, 10)
    page.click("#stop")
    assert wait_status(page) == "stopped"
    assert page.text_content(f"{LAST_ANSWER} >> .badge") == "Stopped"
    stored = Message.objects.get(conversation_id=conversation_id, role="assistant")
    assert stored.status == "stopped"
    assert 0 < len(stored.content) < 3000 * 3

    # Esc stops too; the regenerate button brings a second answer, which Esc then stops.
    page.click(f"{LAST_ANSWER} >> button[aria-label=Regenerate]")
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant .version-count').length"
        " && document.querySelector('.msg-assistant .version-count').textContent.trim() === '2 / 2'"
    )
    wait_text(page, 10)
    page.keyboard.press("Escape")
    assert wait_status(page) == "stopped"
    no_js_errors(page)


def test_reload_mid_answer_continues_and_completes(live_daphne, open_page):
    page = open_page("/")
    send(page, "Explain it slowly [[tokens:500]] [[rate:100]]")
    conversation_id = conversation_id_from_url(page)
    wait_text(page, 20)
    page.reload()
    page.wait_for_selector(".msg-assistant")
    # The page comes back with the answer so far and keeps receiving it.
    assert answer_status(page) in ("pending", "streaming")
    seen = len(answer_text(page))
    page.wait_for_function(
        "n => { const els = document.querySelectorAll('.msg-assistant .msg-content');"
        " return els[els.length - 1].textContent.length > n; }",
        arg=seen,
    )
    assert wait_status(page) == "complete"
    stored = Message.objects.get(conversation_id=conversation_id, role="assistant")
    assert stored.status == "complete"
    # What the page shows after catching up is the whole stored answer, exactly once.
    fresh = page.context.new_page()
    fresh.goto(page.url)
    fresh.wait_for_selector(".msg-assistant[data-status=complete]")
    assert answer_text(page) == answer_text(fresh)
    no_js_errors(page)


def test_network_drop_reconnects_and_catches_up(live_daphne, open_page):
    page = open_page("/")
    send(page, "Keep going [[tokens:500]] [[rate:100]]")
    conversation_id_from_url(page)
    wait_text(page, 20)
    page.evaluate("() => window.kimichat.socket.simulateDrop()")
    page.wait_for_selector("#banner:not([hidden])", timeout=3000)
    page.wait_for_selector("#banner", state="hidden", timeout=10000)
    assert wait_status(page) == "complete"
    fresh = page.context.new_page()
    fresh.goto(page.url)
    fresh.wait_for_selector(".msg-assistant[data-status=complete]")
    assert answer_text(page) == answer_text(fresh)
    no_js_errors(page)


def drop_and_hold_the_socket(page) -> None:
    """Drop the page's socket and keep it from reconnecting until ``let_the_socket_reconnect``."""
    page.evaluate(
        "() => { const s = window.kimichat.socket; s.connect = ((orig) => function () {"
        " if (window.__hold) { this.retryTimer = null; this.scheduleReconnect(); return; }"
        " return orig.call(this); })(s.connect);"
        " window.__hold = true; s.simulateDrop(); }"
    )
    page.wait_for_selector("#banner:not([hidden])")


def let_the_socket_reconnect(page) -> None:
    page.evaluate("() => { window.__hold = false; }")


def test_send_during_a_drop_is_delivered_once_after_reconnect(live_daphne, open_page):
    page = open_page("/")
    # Block the socket from reconnecting for a moment, send meanwhile: the send waits and goes out once.
    drop_and_hold_the_socket(page)
    send(page, "sent while offline [[tokens:20]]")
    assert page.is_disabled("#send") or page.is_hidden("#send")
    let_the_socket_reconnect(page)
    assert wait_status(page) == "complete"
    conversation_id = conversation_id_from_url(page)
    assert Message.objects.filter(conversation_id=conversation_id, role="user").count() == 1
    assert page.locator(".msg-user").count() == 1
    no_js_errors(page)


def test_stop_during_a_drop_stops_the_answer_after_reconnect(live_daphne, open_page):
    """Stop clicked while the socket is down is not lost: it goes out once the socket is back."""
    page = open_page("/")
    send(page, "A long one [[tokens:3000]] [[rate:60]]")
    conversation_id = conversation_id_from_url(page)
    wait_text(page, 10)
    drop_and_hold_the_socket(page)
    page.click("#stop")
    page.wait_for_timeout(300)
    assert Message.objects.get(conversation_id=conversation_id, role="assistant").status == "streaming"
    let_the_socket_reconnect(page)
    assert wait_status(page) == "stopped"
    assert Message.objects.get(conversation_id=conversation_id, role="assistant").status == "stopped"
    no_js_errors(page)


def test_rename_pin_search_and_delete(live_daphne, browser_user, open_page):
    old = make_conversation(browser_user, "Gardening notes", ("user", "How deep do tulip bulbs go?"))
    other = make_conversation(browser_user, "Sourdough", ("user", "What hydration for a rye loaf?"))
    page = open_page("/")
    page.wait_for_selector(f'.conv-item[data-id="{old.pk}"]')

    # Rename inline.
    page.hover(f'.conv-item[data-id="{old.pk}"]')
    page.click(f'.conv-item[data-id="{old.pk}"] .conv-more')
    page.click("#conv-menu [data-action=rename]")
    page.fill(".rename-input", "Spring bulbs")
    page.press(".rename-input", "Enter")
    page.wait_for_selector(f'.conv-item[data-id="{old.pk}"] .conv-title:text-is("Spring bulbs")')
    old.refresh_from_db()
    assert old.title == "Spring bulbs"

    # Pin: it heads the list under "Pinned".
    page.click(f'.conv-item[data-id="{other.pk}"] .conv-more')
    page.click("#conv-menu [data-action=pin]")
    page.wait_for_selector(".conv-group-title:text-is('Pinned')")
    assert page.get_attribute(".conv-item >> nth=0", "data-id") == str(other.pk)
    other.refresh_from_db()
    assert other.pinned

    # Search (Ctrl+K focuses the box) finds the message; the hit opens the conversation.
    page.keyboard.press("Control+k")
    assert page.evaluate("() => document.activeElement.id") == "search"
    page.keyboard.type("tulip")
    page.wait_for_selector(".search-hit")
    assert page.text_content(".search-hit mark").lower() == "tulip"
    page.click(".search-hit")
    page.wait_for_url(f"**/c/{old.pk}/")
    page.wait_for_selector(".msg-user:has-text('How deep do tulip bulbs go?')")
    assert page.text_content("#chat-title") == "Spring bulbs"

    # Delete, with a confirmation.
    page.fill("#search", "")
    page.wait_for_selector(f'.conv-item[data-id="{old.pk}"]')
    page.click(f'.conv-item[data-id="{old.pk}"] .conv-more')
    page.click("#conv-menu [data-action=delete]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog [data-ok]")
    page.wait_for_selector(f'.conv-item[data-id="{old.pk}"]', state="detached")
    assert not Conversation.objects.filter(pk=old.pk).exists()
    assert page.url.endswith("/") and "/c/" not in page.url  # the open chat was the deleted one
    assert page.dialogs == []
    no_js_errors(page)


def test_archive_view_and_new_chat_shortcut(live_daphne, browser_user, open_page):
    conversation = make_conversation(browser_user, "Taxes 2026", ("user", "Which forms?"))
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-user")
    page.click(f'.conv-item[data-id="{conversation.pk}"] .conv-more')
    page.click("#conv-menu [data-action=archive]")
    page.wait_for_selector(f'.conv-item[data-id="{conversation.pk}"]', state="detached")
    page.click("#show-archived")
    page.wait_for_selector(f'.conv-item[data-id="{conversation.pk}"]')
    conversation.refresh_from_db()
    assert conversation.archived
    page.keyboard.press("Control+Shift+O")
    page.wait_for_function("() => location.pathname === '/'")
    assert page.text_content("#chat-title") == "New chat"
    assert page.evaluate("() => document.activeElement.id") == "prompt"
    no_js_errors(page)


def test_sidebar_loads_more_pages_as_it_scrolls(live_daphne, browser_user, open_page):
    for n in range(45):
        make_conversation(browser_user, f"Chat number {n:02d}")
    page = open_page("/")
    page.wait_for_selector(".conv-item")
    page.wait_for_function("() => document.querySelectorAll('.conv-item').length >= 30")
    page.eval_on_selector("#conv-nav", "nav => { nav.scrollTop = nav.scrollHeight; }")
    page.wait_for_function("() => document.querySelectorAll('.conv-item').length === 45")
    titles = page.eval_on_selector_all(".conv-title", "els => els.map(e => e.textContent)")
    assert len(set(titles)) == 45
    no_js_errors(page)


def test_export_downloads(live_daphne, browser_user, open_page):
    conversation = make_conversation(
        browser_user,
        "Export me",
        ("user", "What is a monad?"),
        ("assistant", "A monoid in the category of endofunctors."),
    )
    page = open_page("/")
    page.wait_for_selector(f'.conv-item[data-id="{conversation.pk}"]')
    page.click(f'.conv-item[data-id="{conversation.pk}"] .conv-more')
    with page.expect_download() as download_info:
        page.click("#conv-menu [data-action=export-md]")
    markdown = open(download_info.value.path(), encoding="utf-8").read()
    assert "What is a monad?" in markdown and "endofunctors" in markdown

    page.click(f'.conv-item[data-id="{conversation.pk}"] .conv-more')
    with page.expect_download() as download_info:
        page.click("#conv-menu [data-action=export-json]")
    data = json.loads(open(download_info.value.path(), encoding="utf-8").read())
    assert "endofunctors" in json.dumps(data)

    with page.expect_download() as download_info:
        page.click("#export-all")
    assert download_info.value.suggested_filename.endswith(".zip")
    no_js_errors(page)


def test_switch_language_to_chinese(live_daphne, open_page):
    page = open_page("/")
    page.wait_for_selector("#conv-list")
    assert page.text_content("#new-chat") == "New chat"
    page.click("#user-menu summary")
    with page.expect_navigation():
        page.select_option("#language-select", "zh-hans")
    page.wait_for_selector("#prompt")
    assert page.get_attribute("html", "lang") == "zh-hans"
    assert page.text_content("#new-chat").strip() == "新对话"
    assert page.get_attribute("#prompt", "placeholder") == "给 Kimi 发消息"
    # Strings from the JavaScript catalog too.
    send(page, "你好 [[tokens:12]]")
    wait_status(page)
    page.wait_for_selector(".conv-group-title:text-is('今天')")
    screenshot(page, "chat-desktop-zh-hans")
    no_js_errors(page)


def test_chinese_from_accept_language_on_the_login_page(chromium, live_daphne, open_page):
    page = open_page("/accounts/login/", login=False, locale="zh-CN")
    assert page.text_content("h2") == "登录"
    assert page.text_content("form button[type=submit]") == "登录"


XSS_PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    '<svg onload="window.__xss=1"></svg>',
    "[click me](javascript:window.__xss=1)",
    '<a href="javascript:alert(1)">link</a>',
    '<iframe src="javascript:window.__xss=1"></iframe>',
    '<details open ontoggle="window.__xss=1">x</details>',
    "![x](http://127.0.0.1:9/pixel.png)",
    "<style>body{background:url(http://127.0.0.1:9/x)}</style>",
    "```html\n<script>window.__xss=1</script>\n```",
]


def test_xss_payloads_never_execute(live_daphne, browser_user, open_page):
    payload = "\n\n".join(XSS_PAYLOADS)
    titled = make_conversation(
        browser_user,
        '<img src=x onerror="window.__xss=1">',
        ("user", "<script>window.__xss=1</script> findme"),
        ("assistant", payload),
    )
    page = open_page("/")
    remote_requests = []
    page.on("request", lambda r: remote_requests.append(r.url) if ":9/" in r.url else None)
    page.wait_for_selector(f'.conv-item[data-id="{titled.pk}"]')
    # The title is text, shown as typed.
    assert page.text_content(f'.conv-item[data-id="{titled.pk}"] .conv-title') == titled.title

    # Model output ([[echo]] answers with exactly the user's text) and user input.
    send(page, payload + "\n\n[[echo]]")
    assert wait_status(page) == "complete"
    assert "window.__xss=1" in answer_text(page)  # shown as text, not run
    assert page.locator(".msg-assistant img, .msg-assistant iframe, .msg-assistant script").count() == 0
    hrefs = page.eval_on_selector_all(".msg-assistant a", "els => els.map(a => a.getAttribute('href'))")
    assert all(h is None or h.startswith(("http:", "https:", "mailto:")) for h in hrefs)

    # Search snippets: the server's, and a hostile one injected at the network layer.
    page.fill("#search", "findme")
    page.wait_for_selector(".search-hit")
    page.route(
        "**/api/search/**",
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps(
                {
                    "results": [
                        {
                            "conversation_id": titled.pk,
                            "conversation_title": "<img src=x onerror=window.__xss=1>",
                            "message_id": 1,
                            "role": "user",
                            "snippet_html": (
                                '<mark>ok</mark><img src=x onerror="window.__xss=1"><a href="javascript:x">a</a>'
                            ),
                            "updated_at": "2026-01-01T00:00:00+00:00",
                        }
                    ]
                }
            ),
        ),
    )
    page.fill("#search", "hostile")
    page.wait_for_function("() => document.querySelector('.search-hit .search-snippet')?.textContent === 'oka'")
    assert page.inner_html(".search-hit .search-snippet") == "<mark>ok</mark>a"
    page.click(".search-hit")
    page.wait_for_selector(".msg-user")
    page.wait_for_timeout(300)

    assert page.evaluate("() => window.__xss") is None
    assert page.dialogs == []
    assert remote_requests == []
    no_js_errors(page)


def test_markdown_sanitizer_directly(live_daphne, open_page):
    """renderMarkdown itself, without the page's Content-Security-Policy behind it to hide a mistake."""
    page = open_page("/")
    page.wait_for_function("() => window.KimiMarkdown")
    # Parsed into an inert <template>: nothing in it runs or loads while it is inspected.
    check = """p => {
        const t = document.createElement('template');
        t.innerHTML = window.KimiMarkdown.renderMarkdown(p);
        const bad = [];
        for (const el of t.content.querySelectorAll('*')) {
            const tag = el.tagName.toLowerCase();
            if (['script', 'img', 'iframe', 'svg', 'style', 'form', 'input', 'object', 'embed', 'link',
                 'video', 'audio', 'math', 'base', 'meta'].includes(tag)) bad.push(tag);
            for (const a of el.attributes) {
                if (/^on/i.test(a.name) || a.name === 'style' || a.name === 'srcset') bad.push(tag + '@' + a.name);
                if (['href', 'src', 'action', 'formaction', 'xlink:href', 'background', 'poster'].includes(a.name)
                    && !/^(https?:|mailto:)/i.test(a.value)) bad.push(tag + '@' + a.name + '=' + a.value);
            }
        }
        return bad;
    }"""
    for payload in XSS_PAYLOADS + ["<a href='https://example.com'>ok</a> [ok](https://example.com)"]:
        assert page.evaluate(check, payload) == [], payload
    # The check itself catches what it should: raw HTML that was not sanitized.
    assert page.evaluate(check.replace("window.KimiMarkdown.renderMarkdown(p)", "p"), XSS_PAYLOADS[0]) != []
    links = page.evaluate("() => window.KimiMarkdown.renderMarkdown('[a](https://example.com) <mailto:x@y.z>')")
    assert links.count('target="_blank"') == 2 and links.count('rel="noopener noreferrer"') == 2
    table = page.evaluate("() => window.KimiMarkdown.renderMarkdown('| a | b |\\n|---|---|\\n| 1 | 2 |')")
    assert "<table>" in table and "<td>1</td>" in table
    code = page.evaluate("() => window.KimiMarkdown.renderMarkdown('```python\\ndef f(): pass\\n```')")
    assert 'class="hljs-keyword"' in code and "copy-code" in code


def test_settings_panel_follows_the_model(live_daphne, browser_user, open_page):
    conversation = make_conversation(browser_user, "Settings", ("user", "hi"))
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-user")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    # kimi-k2.6: temperature is fixed by the model, thinking is a toggle.
    assert page.is_hidden("#settings-temperature")
    assert "Fixed by this model" in page.text_content("#row-temperature")
    assert page.is_visible("#settings-thinking")
    page.fill("#settings-system", "Answer in French.")
    page.fill("#settings-max_tokens", "512")
    page.select_option("#settings-thinking", "off")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Answer in French."
    assert conversation.max_tokens == 512
    assert conversation.thinking is False

    # A model with a free temperature shows the field instead.
    options = model_ids(page)
    free = next((m for m in options if m.startswith("moonshot-") or m in ("kimi-k2-0905-preview", "kimi-k2")), None)
    if free is None:
        pytest.fail(f"no model with a free temperature among {options}")
    choose_model(page, free)
    page.wait_for_function("m => document.querySelector('#model-picker').value === m", arg=free)
    page.wait_for_timeout(300)
    conversation.refresh_from_db()
    assert conversation.model == free
    page.click("#open-settings")
    assert page.is_visible("#settings-temperature")
    assert page.is_hidden("#settings-thinking")
    no_js_errors(page)


def test_settings_chosen_before_the_first_message_apply_to_the_new_chat(live_daphne, open_page, offline_kimi):
    page = open_page("/")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    assert page.is_enabled("#settings-system")  # a chat that does not exist yet can be set up too
    page.fill("#settings-system", "Answer like a pirate.")
    page.fill("#settings-max_tokens", "256")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    send(page, "hello [[tokens:5]]")
    conversation_id = conversation_id_from_url(page)
    wait_status(page)
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.system_prompt, conversation.max_tokens) == ("Answer like a pirate.", 256)
    sent = offline_kimi.last_request_body
    assert sent["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    # The next new chat starts from defaults again.
    page.click("#new-chat")
    page.click("#open-settings")
    assert page.input_value("#settings-system") == ""
    no_js_errors(page)


def test_edit_and_resend_keeps_the_earlier_version(live_daphne, open_page):
    page = open_page("/")
    send(page, "first question [[tokens:15]]")
    conversation_id = conversation_id_from_url(page)
    wait_status(page)
    page.hover(".msg-user")
    page.click(".msg-user button[aria-label=Edit]")
    page.fill(".edit-area", "second question [[tokens:15]]")
    page.click(".edit-box .btn.primary")
    page.wait_for_selector(".msg-user .msg-content:text-is('second question [[tokens:15]]')")
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant[data-status=complete]').length === 1"
        " && document.querySelector('.msg-user .version-count')"
    )
    assert page.text_content(".msg-user .version-count").strip() == "2 / 2"
    page.click(".msg-user button[aria-label='Previous version']")
    page.wait_for_selector(".msg-user .msg-content:text-is('first question [[tokens:15]]')")
    users = Message.objects.filter(conversation_id=conversation_id, role="user").order_by("id")
    assert [u.content for u in users] == ["first question [[tokens:15]]", "second question [[tokens:15]]"]
    # The version chosen is the server's active branch now (a reload shows it): the edit is the one set aside.
    assert users[0].superseded_by_id is None and users[1].superseded_by_id == users[0].pk
    no_js_errors(page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_desktop_and_phone(live_daphne, browser_user, open_page, scheme):
    conversation = make_conversation(
        browser_user,
        "Binary search in Python",
        ("user", "Show me binary search in Python, and compare it with a linear scan in a table."),
        (
            "assistant",
            "## Binary search\n\nIt halves the range on **every** step, so it needs a *sorted* list.\n\n"
            "```python\ndef search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n"
            "        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n"
            "        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n"
            "    return -1\n```\n\n| | Binary | Linear |\n|---|---|---|\n| Time | O(log n) | O(n) |\n"
            "| Needs sorting | yes | no |\n\n1. Sort once.\n2. Search many times.\n\n"
            "See [the docs](https://docs.python.org/3/library/bisect.html) for `bisect`.",
        ),
        pinned=True,
    )
    Message.objects.filter(conversation=conversation, role="assistant").update(
        model="kimi-k2.6", prompt_tokens=42, completion_tokens=180, total_tokens=222, cost="0.0123"
    )
    for n in range(6):
        make_conversation(browser_user, f"Trip ideas for spring, part {n + 1}")
    desktop = open_page(f"/c/{conversation.pk}/", color_scheme=scheme)
    desktop.wait_for_selector(".msg-assistant .codeblock")
    desktop.wait_for_selector(".conv-item >> nth=6")
    desktop.hover(".msg-assistant .usage")
    screenshot(desktop, f"chat-desktop-{scheme}")
    overflow = desktop.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0

    phone = open_page(
        f"/c/{conversation.pk}/",
        color_scheme=scheme,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    phone.wait_for_selector(".msg-assistant .codeblock")
    assert phone.is_hidden("#sidebar") or phone.evaluate(
        "() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
    )
    screenshot(phone, f"chat-phone-{scheme}")
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    phone.click("#toggle-sidebar")
    phone.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    phone.wait_for_timeout(250)
    screenshot(phone, f"chat-phone-sidebar-{scheme}")
    phone.click("#scrim", position={"x": 370, "y": 400})
    phone.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0")

    empty = open_page("/", color_scheme=scheme)
    empty.wait_for_selector(".conv-item")
    screenshot(empty, f"chat-empty-desktop-{scheme}")
    login = open_page("/accounts/login/", login=False, color_scheme=scheme, viewport={"width": 390, "height": 844})
    screenshot(login, f"login-phone-{scheme}")
    no_js_errors(desktop)
    no_js_errors(phone)


def test_web_search_shows_what_it_searches_and_the_sources_under_the_answer(live_daphne, browser_user, open_page):
    conversation = make_conversation(browser_user, "News", ("user", "hi"))
    Conversation.objects.filter(pk=conversation.pk).update(model="kimi-k3", web_search=True)
    page = open_page(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-user")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    assert page.is_visible("#row-web_search") and page.is_checked("#row-web_search input")
    page.click("#settings-cancel")
    send(page, "What is new? [[search:kimi k3]] [[fault:search_timeout:1.5]]")
    status = page.wait_for_selector(".msg-assistant >> nth=-1 >> .search-status", timeout=15000)
    assert status.text_content() == "Searching: kimi k3"
    # Only the status while it searches: no stray text beside it (a null child once showed as "null").
    assert page.text_content(".msg-assistant >> nth=-1 >> .msg-searches") == "Searching: kimi k3"
    assert wait_status(page) == "complete"
    assert page.query_selector(".msg-assistant >> nth=-1 >> .search-status") is None
    links = page.eval_on_selector_all(
        ".msg-assistant:last-child .search-sources a", "els => els.map(a => [a.textContent, a.href, a.rel])"
    )
    assert [href for _text, href, _rel in links] == [
        "https://news.example.org/kimi-k3",
        "https://wiki.example.org/kimi-k3",
        "https://blog.example.net/kimi-k3",
    ]
    assert all(rel == "noopener noreferrer" for *_x, rel in links)
    # After a reload the stored answer shows its sources again.
    page.reload()
    page.wait_for_selector(".msg-assistant .search-sources a")
    no_js_errors(page)
    # A model without web search does not offer the switch.
    Conversation.objects.filter(pk=conversation.pk).update(model="moonshot-v1-8k-vision-preview", web_search=False)
    page.reload()
    page.wait_for_selector(".msg-user")
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    assert page.is_hidden("#row-web_search")
