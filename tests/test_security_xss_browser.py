"""Stored XSS in real headless Chromium on the pages the chat-page tests do not cover: the share page, the usage page
and the admin, with hostile usernames, titles, messages, model names and ledger notes.

The pages are opened with the Content-Security-Policy bypassed: the CSP would stop an inline handler from running,
so only without it does ``window.__xss`` staying unset prove the markup was escaped. The DOM is also searched for any
element or attribute a payload could have created.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from conversations.models import Conversation, CreditTransaction, Message
from conversations.services.billing import credits
from conversations.services.history import branches, shares
from tests.fixtures.browser import session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload=window.__xss=1>',
    '\'"><iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    '<a href="javascript:window.__xss=1" id=xsslink>click</a>',
    "</title><body onload=window.__xss=1>",
    "<details open ontoggle=window.__xss=1>",
    "{{ 7|add:7 }}{% now 'Y' %}",
    # Math goes to KaTeX after sanitizing: with trust off, none of these may make a link, an element or a handler.
    "$\\href{javascript:window.__xss=1}{x}$ \\(\\url{javascript:window.__xss=1}\\)",
    "$<img src=x onerror=window.__xss=1>$",
    "$$\\htmlId{xsslink}{\\htmlData{onclick=window.__xss=1}{x}}$$ $\\includegraphics{https://example.com/x.png}$",
]
ALL = " ".join(PAYLOADS)
USERNAME = '<img src=x onerror=window.__xss=1>"'  # the signup form would refuse it; an import or the ORM would not

INJECTED = """() => {
  const handlers = [...document.querySelectorAll('*')].filter(el =>
    [...el.attributes].some(a => a.name.startsWith('on') || /^\\s*javascript:/i.test(a.value)));
  const inline = [...document.querySelectorAll('script:not([src])')].filter(s =>
    !['application/json', 'text/template'].includes(s.type) && s.textContent.includes('__xss'));
  return {
    handlers: handlers.map(el => el.outerHTML.slice(0, 120)),
    inline: inline.map(s => s.outerHTML.slice(0, 120)),
    frames: document.querySelectorAll('iframe, svg[onload], details[ontoggle]').length,
  };
}"""


@pytest.fixture
def hostile(make_user):
    """A user, an operator and data carrying every payload in every field the pages show."""
    victim = make_user(USERNAME)
    operator = make_user("operator", is_staff=True, is_superuser=True)
    conversation = Conversation.objects.create(owner=victim, model="kimi-k2.6", title=ALL[:200])
    Message.objects.create(conversation=conversation, role="user", content=ALL)
    Message.objects.create(
        conversation=conversation, role="assistant", content=ALL + "\n\n[link](javascript:window.__xss=1)",
        status="complete", model="kimi-k2.6<img src=x onerror=window.__xss=1>", completion_tokens=5,
        total_tokens=5, cost=1, completed_at=timezone.now(),
    )  # fmt: skip
    credits.grant(victim, 5, created_by=operator, note=ALL)
    branches.link_linear(list(conversation.messages.order_by("id").values_list("id", flat=True)))  # one thread
    link = shares.create_share(conversation)
    return victim, operator, conversation, link


def visit(chromium, server, path: str, user=None):
    context = chromium.new_context(bypass_csp=True)
    if user is not None:
        context.add_cookies([session_cookie_for(user, server.url)])
    page = context.new_page()
    page.set_default_timeout(15000)
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(server.url + path)
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)  # let any timer or late handler a payload set up fire
    for link in page.query_selector_all("#xsslink"):
        link.click()  # a javascript: link that survived would run now
    page.wait_for_timeout(100)
    found = {
        "status": response.status,
        "xss": page.evaluate("() => window.__xss"),
        "dialogs": dialogs,
        "injected": page.evaluate(INJECTED),
        "text": page.inner_text("body"),
    }
    context.close()
    return found


def assert_inert(found: dict, path: str) -> None:
    assert found["status"] == 200, path
    assert found["xss"] is None, path
    assert found["dialogs"] == [], path
    assert found["injected"] == {"handlers": [], "inline": [], "frames": 0}, (path, found["injected"])


def test_share_page(chromium, live_daphne, hostile):
    _victim, _operator, _conversation, link = hostile
    found = visit(chromium, live_daphne, f"/s/{link.token}/")  # anonymous, as a shared link is opened
    assert_inert(found, "share page")
    assert "<script>window.__xss=1</script>" in found["text"]  # shown as text, not dropped silently


def test_usage_page_with_a_hostile_username_model_and_ledger_note(chromium, live_daphne, hostile):
    victim = hostile[0]
    found = visit(chromium, live_daphne, "/usage/", victim)
    assert_inert(found, "usage page")
    assert USERNAME in found["text"]


def test_chat_page_with_a_hostile_username(chromium, live_daphne, hostile):
    victim, _operator, conversation, _link = hostile
    assert_inert(visit(chromium, live_daphne, f"/c/{conversation.pk}/", victim), "chat page")


ADMIN_PAGES = [
    "/admin/",
    "/admin/dashboard/",
    "/admin/auth/user/",
    "/admin/auth/user/{victim}/change/",
    "/admin/conversations/conversation/",
    "/admin/conversations/conversation/{conversation}/change/",
    "/admin/conversations/message/",
    "/admin/conversations/message/{message}/change/",
    "/admin/conversations/credittransaction/",
    "/admin/conversations/credittransaction/{transaction}/change/",
]


def test_admin_pages(chromium, live_daphne, hostile):
    victim, operator, conversation, _link = hostile
    ids = {
        "victim": victim.pk,
        "conversation": conversation.pk,
        "message": conversation.messages.order_by("id").last().pk,
        "transaction": CreditTransaction.objects.filter(note=ALL[:500]).get().pk,
    }
    for path in ADMIN_PAGES:
        path = path.format(**ids)
        assert_inert(visit(chromium, live_daphne, path, operator), path)


def test_the_detector_sees_an_injection(chromium):
    """The control: the same checks on a page that does inject the payloads report every one of them."""
    context = chromium.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_content("<body>" + ALL + "</body>")
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") == 1
    injected = page.evaluate(INJECTED)
    assert injected["handlers"] and injected["inline"] and injected["frames"]
    context.close()
