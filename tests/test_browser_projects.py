"""Projects in the browser: create one with instructions, start a chat in it and see the instructions reach the
model (the offline server echoes the system messages it received), drag a chat onto it, file one with the keyboard
through "Move to project", search within it; screenshots light and dark, desktop and phone."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Project
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import (
    LAST_ANSWER,
    conversation_id_from_url,
    make_conversation,
    no_js_errors,
    send,
    wait_status,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def create_project(page, name: str, instructions: str, emoji: str = "") -> Project:
    page.click("#new-project")
    page.wait_for_selector("#project-dialog[open]")
    page.fill("#project-name", name)
    page.fill("#project-emoji", emoji)
    page.fill("#project-instructions", instructions)
    page.click('#project-dialog .swatch[title="Green"]')
    page.click("#project-dialog [data-save]")
    page.wait_for_selector("#project-dialog [data-heading]:text('Edit project')")  # stays open for files
    page.click("#project-dialog [data-cancel]")
    project = Project.objects.get(name=name)
    page.wait_for_selector(f'.project-row[data-project-id="{project.pk}"]')
    return project


def test_instructions_reach_the_model_and_chats_are_dragged_and_moved(
    live_daphne, browser_user, open_page, offline_kimi
):
    loose = make_conversation(browser_user, "Loose notes", ("user", "notes"), ("assistant", "ok"))
    other = make_conversation(browser_user, "Shopping list", ("user", "milk and quarterly eggs"), ("assistant", "ok"))
    page = open_page("/")
    project = create_project(page, "Pirates", "Always answer like a pirate.", emoji="🏴")
    assert (project.color, project.instructions, project.emoji) == ("#22c55e", "Always answer like a pirate.", "🏴")

    # A new chat in the project: its first send files it there, and the instructions reach the model.
    page.click(f'.project-row[data-project-id="{project.pk}"] .conv-more >> nth=0')
    assert page.text_content("#head-project") == "🏴 Pirates"
    send(page, "Where is the treasure? [[echo:context]]")
    assert wait_status(page) == "complete"
    started = conversation_id_from_url(page)
    assert "[system: Always answer like a pirate.]" in page.text_content(LAST_ANSWER)
    sent = offline_kimi.log.last_request_body["messages"]
    assert sent[0] == {"role": "system", "content": "Always answer like a pirate."}
    assert Conversation.objects.get(pk=started).project_id == project.pk
    page.wait_for_selector(f'.project-chats .conv-item[data-id="{started}"]')

    # Drag a chat from the list onto the project.
    row = f'.project-row[data-project-id="{project.pk}"]'
    page.locator(f'#conv-list .conv-item[data-id="{loose.pk}"]').drag_to(page.locator(row))
    page.wait_for_selector(f'.project-chats .conv-item[data-id="{loose.pk}"]')
    assert page.locator(f'#conv-list .conv-item[data-id="{loose.pk}"]').count() == 0
    loose.refresh_from_db()
    assert loose.project_id == project.pk

    # The keyboard's way: the chat's menu, "Move to project…", a select, Enter.
    page.click(f'#conv-list .conv-item[data-id="{other.pk}"] .conv-more')
    page.click("#conv-menu [data-action=move]")
    page.wait_for_selector("#move-dialog[open]")
    page.select_option("#move-project", str(project.pk))
    page.press("#move-project", "Enter")
    page.wait_for_selector(f'.project-chats .conv-item[data-id="{other.pk}"]')
    other.refresh_from_db()
    assert other.project_id == project.pk
    page.wait_for_function(  # the counts are read back from the server after a move
        "sel => document.querySelector(sel).textContent === '3'", arg=f"{row} .project-count"
    )

    # Search within the project.
    page.click(f"{row} .conv-more >> nth=1")
    page.click("#conv-menu .menu-item:has-text('Search in project')")
    page.fill("#search", "quarterly")
    page.wait_for_selector(f'#search-results a[href="/c/{other.pk}/"]')
    assert page.text_content("#search-scope") == "In Pirates"
    no_js_errors(page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_desktop_and_phone(live_daphne, browser_user, open_page, scheme):
    work = Project.objects.create(owner=browser_user, name="Thesis", emoji="📚", color="#3b82f6", position=0)
    Project.objects.create(owner=browser_user, name="Garden planning for the spring", color="#22c55e", position=1)
    filed = make_conversation(browser_user, "Literature review", ("user", "hi"), ("assistant", "hello"), project=work)
    make_conversation(browser_user, "Methods chapter", ("user", "hi"), ("assistant", "hello"), project=work)
    make_conversation(browser_user, "Weekend plans", ("user", "hi"), ("assistant", "hello"))
    desktop = open_page(f"/c/{filed.pk}/", color_scheme=scheme)
    desktop.wait_for_selector(f'.project-chats .conv-item[data-id="{filed.pk}"]')
    screenshot(desktop, f"projects-desktop-{scheme}")
    desktop.click(f'.project-row[data-project-id="{work.pk}"] .conv-more >> nth=1')
    desktop.click("#conv-menu .menu-item:has-text('Edit project')")
    desktop.wait_for_selector("#project-dialog[open]")
    screenshot(desktop, f"projects-dialog-desktop-{scheme}")
    no_js_errors(desktop)
    phone = open_page("/", color_scheme=scheme, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.click("#toggle-sidebar")
    phone.wait_for_selector(f'.project-row[data-project-id="{work.pk}"]')
    phone.wait_for_timeout(300)
    screenshot(phone, f"projects-phone-{scheme}")
    no_js_errors(phone)
