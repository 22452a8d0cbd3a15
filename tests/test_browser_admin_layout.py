"""The admin as an operator sees it at 1280 px: every changelist fits the window (a wide table scrolls inside
itself, nothing is cut off at the right edge), the favicon is there, and no Delete is offered that must fail."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.billing import credits
from tests.fixtures.browser import screenshot, session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHANGELISTS = [
    "/admin/auth/user/",
    "/admin/conversations/conversation/",
    "/admin/conversations/message/",
    "/admin/conversations/credittransaction/",
]

# Every element the operator should be able to reach: its right edge inside the window, or inside an ancestor that
# scrolls horizontally (which itself ends inside the window).
CLIPPED = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const clipped = [];
  for (const el of document.querySelectorAll('#result_list th, #result_list td, #changelist-filter, #toolbar')) {
    let box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    let scroller = el.parentElement;
    while (scroller && scroller !== document.body && !scrolls(scroller)) scroller = scroller.parentElement;
    const limit = scroller && scroller !== document.body ? Math.min(width, scroller.getBoundingClientRect().right)
                                                          : width;
    const inScroller = scroller && scroller !== document.body;
    if (box.right > width + 1 && !inScroller) clipped.push(el.tagName + ' ' + el.textContent.trim().slice(0, 30));
    if (inScroller && limit > width + 1) clipped.push('scroller ' + scroller.className);
  }
  // Scrolling is the fallback, not the normal case: with these values every column is in view without it.
  const results = document.querySelector('#changelist-form .results');
  const hidden = results ? results.scrollWidth - results.clientWidth : 0;
  return {clipped, pageOverflow: document.documentElement.scrollWidth - width, hiddenColumns: hidden};
}"""


@pytest.fixture
def operator_and_data(make_user):
    operator = make_user("operator", is_staff=True, is_superuser=True)
    user = make_user("a-rather-long-username-for-a-table@example.org", email="someone.with.a.long.address@example.org")
    conversation = Conversation.objects.create(owner=user, model="kimi-k2.6-thinking-preview", title="T" * 120)
    Message.objects.create(conversation=conversation, role="user", content="hello " * 50)
    Message.objects.create(
        conversation=conversation, role="assistant", content="answer " * 50, status="complete",
        model="kimi-k2.6-thinking-preview", completion_tokens=1234, total_tokens=5678, cost=1,
        completed_at=timezone.now(),
    )  # fmt: skip
    credits.grant(user, 5, created_by=operator, note="top-up, invoice 2026-031 with a long note " * 3)
    return operator, user


def test_admin_changelists_fit_a_1280_px_window(chromium, live_daphne, operator_and_data):
    operator, _user = operator_and_data
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.add_cookies([session_cookie_for(operator, live_daphne.url)])
    page = context.new_page()
    found = {}
    for path in CHANGELISTS:
        page.goto(live_daphne.url + path)
        screenshot(page, "pages-admin-" + path.strip("/").replace("/", "-"))
        result = page.evaluate(CLIPPED)
        if result["clipped"] or result["pageOverflow"] > 0 or result["hiddenColumns"] > 1:
            found[path] = result
    context.close()
    assert found == {}


def test_admin_pages_have_a_favicon(chromium, live_daphne, operator_and_data):
    operator, _user = operator_and_data
    context = chromium.new_context()
    context.add_cookies([session_cookie_for(operator, live_daphne.url)])
    page = context.new_page()
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto(live_daphne.url + "/admin/")
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon and page.request.get(live_daphne.url + icon).status == 200
    assert page.request.get(live_daphne.url + "/favicon.ico").status == 200
    assert failed == []
    context.close()


def test_no_delete_is_offered_for_a_user_with_a_ledger(operator_and_data, settings):
    """The ledger is append-only, so deleting such a user always ended in a refusal: the button and the bulk
    action are gone (deactivate instead). A user with no ledger rows can still be deleted."""
    operator, user = operator_and_data
    client = Client()
    client.force_login(operator)
    listing = client.get("/admin/auth/user/")
    assert "delete_selected" not in listing.content.decode()
    change = client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "deletelink" not in change
    assert client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"}).status_code == 403

    settings.KIMICHAT_SIGNUP_CREDITS = 0  # a server without signup credits: a new user has no ledger rows
    stray = get_user_model().objects.create_user("never-credited")
    change = client.get(f"/admin/auth/user/{stray.pk}/change/").content.decode()
    assert "deletelink" in change
    assert client.post(f"/admin/auth/user/{stray.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not get_user_model().objects.filter(pk=stray.pk).exists()
