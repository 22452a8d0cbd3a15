"""Personalisation as a person meets it, in headless Chromium against daphne and the offline Kimi server: the title
that appears after the first answer, presets, custom instructions, the theme that survives a reload, thumbs down
with a note seen in the admin. Screenshots land in tests/artifacts/ (personal-*)."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Permission

from conversations.models import Conversation, Feedback, Preset, UserPreferences
from tests.daphne import start_daphne
from tests.fixtures.browser import screenshot, session_cookie_for
from tests.test_browser_chat import conversation_id_from_url, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture
def live_daphne(transactional_db, offline_kimi, tmp_path):
    """As the shared fixture, with automatic titles on (the suite's default turns them off)."""
    server = start_daphne(offline_kimi, tmp_path, REDIS_URL=os.environ.get("REDIS_URL", ""), AUTO_TITLES="true")
    try:
        yield server
    finally:
        server.stop()


def test_a_title_appears_in_the_sidebar_and_header_after_the_first_answer(open_page, browser_user):
    page = open_page("/")
    send(page, "how do I normalise unicode text in python? [[tokens:12]]")
    conversation_id = conversation_id_from_url(page)
    wait_status(page)
    page.wait_for_function("() => document.querySelector('#chat-title').textContent === 'How do I normalise unicode'")
    link = f"#conv-list [href='/c/{conversation_id}/']"
    page.wait_for_function(
        f"() => document.querySelector(\"{link}\").textContent.includes('How do I normalise unicode')"
    )
    assert page.title().startswith("How do I normalise unicode")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.title, conversation.title_source) == ("How do I normalise unicode", "generated")
    # Written again from the chat's menu, after a rename.
    conversation.title = "Mine"
    conversation.title_source = "user"
    conversation.save()
    page.reload()
    page.wait_for_selector("html[data-ready]")
    page.wait_for_selector(".msg-assistant .thumb")  # the history loads (with its ratings)
    page.hover(link)
    page.click(f"#conv-list [data-id='{conversation_id}'] .conv-more")
    page.click("#conv-menu [data-action=title]")
    page.wait_for_function("() => document.querySelector('#chat-title').textContent === 'How do I normalise unicode'")
    no_js_errors(page)


def test_a_preset_starts_a_chat_with_its_model_and_system_prompt(open_page, browser_user, offline_kimi):
    Preset.objects.create(
        owner=browser_user,
        name="Pirate",
        model="moonshot-v1-8k",
        system_prompt="Answer like a pirate.",
        settings={"temperature": 0.3},
    )
    page = open_page("/")
    page.wait_for_selector("#presets .preset-pick:has-text('Pirate')")
    screenshot(page, "personal-presets-light-1280")
    page.click("#presets .preset-pick:has-text('Pirate')")
    page.wait_for_selector("#presets .preset.chosen")
    assert page.text_content("#model-picker [data-name]").strip() != "—"
    send(page, "ahoy [[tokens:5]]")
    conversation = Conversation.objects.get(pk=conversation_id_from_url(page))
    wait_status(page)
    conversation.refresh_from_db()
    assert (conversation.model, conversation.system_prompt, conversation.temperature) == (
        "moonshot-v1-8k",
        "Answer like a pirate.",
        0.3,
    )
    answer = conversation.messages.get(role="assistant")
    assert answer.model == "moonshot-v1-8k"
    # What reached the offline server: the answer's streamed request (the title's, not streamed, follows it).
    [streamed] = [r.body for r in offline_kimi.log.chat_requests if r.body.get("stream")]
    assert streamed["model"] == "moonshot-v1-8k" and streamed["temperature"] == 0.3
    assert streamed["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    no_js_errors(page)


def test_custom_instructions_reach_the_model_and_can_be_switched_off(open_page, browser_user):
    page = open_page("/")
    page.click("#user-menu summary")
    page.click("#open-personal")
    page.wait_for_selector("#personal-dialog[open]")
    page.fill("#personal-about", "I am a marine biologist.")
    page.fill("#personal-style", "Answer in one sentence.")
    screenshot(page, "personal-dialog-light-1280")
    page.click("#personal-form button[type=submit]")
    page.wait_for_selector("#personal-dialog", state="hidden")
    send(page, "who am I? [[echo:system]]")
    wait_status(page)
    text = page.text_content(".msg-assistant .msg-content")
    assert "I am a marine biologist." in text and "Answer in one sentence." in text
    # Switched off for this chat in its settings: the next answer no longer gets them.
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    page.uncheck("#row-custom_instructions input")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-dialog", state="hidden")
    conversation = Conversation.objects.get(pk=conversation_id_from_url(page))
    page.wait_for_function("() => window.kimichat.conv && window.kimichat.conv.custom_instructions === false")
    send(page, "again [[echo:system]]")
    page.wait_for_function("() => document.querySelectorAll('.msg-assistant').length === 2")
    wait_status(page)
    last = page.eval_on_selector_all(".msg-assistant .msg-content", "els => els[els.length - 1].textContent")
    assert "marine biologist" not in last and last.startswith("again")
    conversation.refresh_from_db()
    assert conversation.custom_instructions is False
    no_js_errors(page)


def test_the_theme_is_remembered_across_reloads_without_a_flash(open_page, browser_user, live_daphne):
    page = open_page("/", color_scheme="light")
    assert page.get_attribute("html", "data-theme") == "system"
    page.click("#user-menu summary")
    page.click("[data-theme-choice=dark]")
    page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 24, 29)"
    page.wait_for_function("() => true")
    for _ in range(50):
        if UserPreferences.objects.filter(user=browser_user, theme="dark").exists():
            break
        page.wait_for_timeout(100)
    # The next page load carries it in the HTML itself: dark from the first paint, before any script runs.
    html = page.context.request.get(live_daphne.url + "/").text()
    assert 'data-theme="dark"' in html
    page.reload()
    page.wait_for_selector("html[data-ready]")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(22, 24, 29)"
    assert page.get_attribute("#hljs-dark", "media") == "all"
    assert page.get_attribute("[data-theme-choice=dark]", "aria-pressed") == "true"
    no_js_errors(page)


def test_thumbs_down_with_a_note_is_seen_in_the_admin(open_page, browser_user, make_user, chromium, live_daphne):
    page = open_page("/")
    send(page, "what year is it? [[tokens:8]]")
    wait_status(page)
    page.hover(".msg-assistant")
    page.click(".msg-assistant .thumb[data-rating=down]")
    page.wait_for_selector("#feedback-dialog[open]")
    page.fill("#feedback-note", "It got the year wrong.")
    page.click("#feedback-form button[type=submit]")
    page.wait_for_selector("#feedback-dialog", state="hidden")
    page.wait_for_selector(".msg-assistant .thumb.chosen[data-rating=down]")
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.note) == (-1, "It got the year wrong.")
    no_js_errors(page)

    staff = make_user("reviewer", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_message", "view_credittransaction"]))
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([session_cookie_for(staff, live_daphne.url)])
    admin = context.new_page()
    admin.goto(live_daphne.url + "/admin/conversations/feedback/?rating__exact=-1")
    assert "It got the year wrong." in admin.text_content("#result_list")
    screenshot(admin, "personal-admin-feedback")
    admin.goto(live_daphne.url + "/admin/dashboard/")
    assert "Feedback by model" in admin.text_content("body")
    assert "kimi-k2.6" in admin.text_content("#kc-feedback")
    context.close()


@pytest.mark.parametrize(
    ("theme", "options", "name"),
    [
        ("light", {}, "light-1280"),
        ("dark", {}, "dark-1280"),
        ("light", PHONE, "light-390"),
        ("dark", PHONE, "dark-390"),
    ],
)
def test_screenshots(open_page, browser_user, theme, options, name):
    UserPreferences.objects.create(user=browser_user, theme=theme)
    Preset.objects.create(owner=browser_user, name="Code reviewer", system_prompt="Review code.")
    Preset.objects.create(owner=browser_user, name="Translator", model="kimi-k2.6", system_prompt="Translate.")
    page = open_page("/", **options)
    page.wait_for_selector("#presets .preset-pick")
    screenshot(page, f"personal-empty-{name}")
    send(page, "explain rate limiting [[tokens:30]]")
    wait_status(page)
    page.wait_for_function("() => document.querySelector('#chat-title').textContent === 'Explain rate limiting'")
    page.hover(".msg-assistant")
    screenshot(page, f"personal-chat-{name}")
    page.click("#user-menu summary")
    screenshot(page, f"personal-menu-{name}")
    no_js_errors(page)
