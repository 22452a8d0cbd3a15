"""Branches on the chat page, as a person uses them: edit an earlier question, browse the versions with ‹ ›, each
showing its branch's whole continuation, and a reload keeps the branch chosen."""

from __future__ import annotations

import pytest

from conversations.models import Message
from tests.fixtures.browser import screenshot
from tests.test_browser_chat import conversation_id_from_url, no_js_errors, send, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shown(page) -> list[str]:
    """The texts of the questions on the page, top to bottom."""
    return page.eval_on_selector_all(".msg-user .msg-content", "els => els.map(e => e.textContent)")


def wait_questions(page, texts: list[str]) -> None:
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('.msg-user .msg-content')].map(e => e.textContent))"
        " === JSON.stringify(want)",
        arg=texts,
    )


def question_node(page, text: str):
    return page.locator(".msg-user", has=page.locator(f".msg-content:text-is('{text}')"))


def test_edit_the_third_of_five_questions_and_switch_branches(live_daphne, open_page):
    page = open_page("/")
    questions = [f"question {n} [[tokens:6]]" for n in range(1, 6)]
    for n, text in enumerate(questions):
        send(page, text)
        page.wait_for_function(
            "n => document.querySelectorAll('.msg-assistant[data-status=complete]').length === n", arg=n + 1
        )
    conversation_id = conversation_id_from_url(page)
    assert shown(page) == questions

    # Edit the third question: the new branch continues from there, the two after it are gone from view.
    third = question_node(page, questions[2])
    third.hover()
    third.locator("button[aria-label=Edit]").click()
    page.fill(".edit-area", "question 3, asked differently [[tokens:6]]")
    page.click(".edit-box .btn.primary")
    edited = [*questions[:2], "question 3, asked differently [[tokens:6]]"]
    wait_questions(page, edited)
    wait_status(page)
    page.wait_for_selector(".msg-user .version-count")
    assert page.text_content(".msg-user .version-count").strip() == "2 / 2"
    send(page, "question 4 on the new branch [[tokens:6]]")
    new_branch = [*edited, "question 4 on the new branch [[tokens:6]]"]
    wait_questions(page, new_branch)
    page.wait_for_function("() => document.querySelectorAll('.msg-assistant[data-status=complete]').length === 4")
    screenshot(page, "branches-new-desktop-light")

    # ‹ : the first version of question 3, with its whole continuation (questions 4 and 5 and their answers).
    page.click(".msg-user button[aria-label='Previous version']")
    wait_questions(page, questions)
    assert page.locator(".msg-assistant").count() == 5
    assert page.text_content(".msg-user .version-count").strip() == "1 / 2"
    assert page.is_disabled(".msg-user button[aria-label='Previous version']")
    screenshot(page, "branches-old-desktop-light")

    # › : back to the new branch, as it was left.
    page.click(".msg-user button[aria-label='Next version']")
    wait_questions(page, new_branch)
    assert page.locator(".msg-assistant").count() == 4

    # ‹ again, then a reload: the page opens on the branch chosen last.
    page.click(".msg-user button[aria-label='Previous version']")
    wait_questions(page, questions)
    page.reload()
    page.wait_for_selector("html[data-ready]")
    wait_questions(page, questions)
    assert page.text_content(".msg-user .version-count").strip() == "1 / 2"
    current = Message.objects.filter(conversation_id=conversation_id, role="user").current().order_by("id")
    assert [m.content for m in current] == questions

    # A send on the branch shown continues it.
    send(page, "question 6 [[tokens:6]]")
    wait_questions(page, [*questions, "question 6 [[tokens:6]]"])
    no_js_errors(page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_branch_screenshots_desktop_and_phone(live_daphne, open_page, scheme):
    page = open_page("/", color_scheme=scheme)
    for text in ("Plan a weekend in Lisbon [[tokens:30]]", "What should I eat there? [[tokens:30]]"):
        send(page, text)
        wait_status(page)
    conversation_id = conversation_id_from_url(page)
    first = question_node(page, "Plan a weekend in Lisbon [[tokens:30]]")
    first.hover()
    first.locator("button[aria-label=Edit]").click()
    page.fill(".edit-area", "Plan a weekend in Porto [[tokens:30]]")
    page.click(".edit-box .btn.primary")
    wait_questions(page, ["Plan a weekend in Porto [[tokens:30]]"])
    wait_status(page)
    page.wait_for_selector(".msg-user .version-count")
    page.locator(".msg-assistant").last.hover()
    screenshot(page, f"branches-desktop-{scheme}")
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0

    phone = open_page(
        f"/c/{conversation_id}/",
        color_scheme=scheme,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    phone.wait_for_selector(".msg-user .version-count")
    phone.click(".msg-user button[aria-label='Previous version']")
    wait_questions(phone, ["Plan a weekend in Lisbon [[tokens:30]]", "What should I eat there? [[tokens:30]]"])
    screenshot(phone, f"branches-phone-{scheme}")
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    no_js_errors(page)
    no_js_errors(phone)
