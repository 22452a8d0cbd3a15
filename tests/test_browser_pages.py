"""Every page as a browser shows it, with the app's own Content-Security-Policy in force: nothing the policy blocks,
the share page laid out like the chat, math rendered by KaTeX with its TeX source kept byte for byte.

Screenshots land in tests/artifacts/ (pages-*.png) for a person to look at.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.history import branches, shares
from tests.fixtures.browser import screenshot, session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Records every CSP violation the page reports, from the first byte on (an init script runs before the page's own).
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber} ${e.sample}`);
});
"""

ANSWER = """Here is the plan, in **three** steps, with enough words to wrap over several lines on a phone as well as
on a desktop screen, so that a reader can tell at a glance whether the column is as wide as the page.

| step | what | cost |
|---|---|---|
| 1 | read the file | $0 |
| 2 | parse it | small |

```python
def answer(question: str) -> int:
    return 42  # a long comment that makes the code block wider than a phone screen, so it must scroll inside itself
```

The integral $\\int_0^1 x\\,dx = \\frac{1}{2}$ is inline, and this one is on its own:

$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$
"""
REASONING = "The user wants a plan. Let me think about the steps one by one and keep it short. " * 4


def visit(chromium, server, path: str, user=None, *, viewport=None, wait_for: str | None = None):
    context = chromium.new_context(viewport=viewport or {"width": 1280, "height": 800}, locale="en-US")
    if user is not None:
        context.add_cookies([session_cookie_for(user, server.url)])
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.console_csp = []
    page.js_errors = []
    page.on(
        "console",
        lambda m: page.console_csp.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    response = page.goto(server.url + path)
    page.wait_for_load_state("load")
    if wait_for:
        page.wait_for_selector(wait_for)
    page.status = response.status
    return page


def violations(page) -> list[str]:
    return page.evaluate("() => window.__csp") + page.console_csp


@pytest.fixture
def chat_data(make_user):
    user = make_user("alice")
    operator = make_user("operator", is_staff=True, is_superuser=True)
    conversation = Conversation.objects.create(owner=user, model="kimi-k2.6", title="A plan in three steps")
    Message.objects.create(conversation=conversation, role="user", content="Give me a plan, please.\nIn steps.")
    Message.objects.create(
        conversation=conversation, role="assistant", content=ANSWER, reasoning=REASONING, status="complete",
        model="kimi-k2.6", completed_at=timezone.now(),
    )  # fmt: skip
    Message.objects.create(conversation=conversation, role="user", content="And without thinking?")
    Message.objects.create(
        conversation=conversation, role="assistant", content="Just this: **one** line, and $a\\,b$ in it.",
        status="complete", model="kimi-k2.6", completed_at=timezone.now(),
    )  # fmt: skip
    branches.link_linear(list(conversation.messages.order_by("id").values_list("id", flat=True)))  # one thread
    link = shares.create_share(conversation)
    return user, operator, conversation, link


def test_no_page_breaks_the_content_security_policy(chromium, live_daphne, chat_data):
    """Every template, opened as its user would: the CSP blocks nothing on any of them (an inline <style> did)."""
    user, operator, conversation, link = chat_data
    pages = [
        ("/", user, "html[data-ready]"),
        (f"/c/{conversation.pk}/", user, ".msg-assistant .katex"),
        ("/usage/", user, None),
        (f"/s/{link.token}/", None, ".katex"),
        ("/accounts/login/", None, None),
        ("/accounts/signup/", None, None),
        ("/accounts/password/", user, None),
        ("/accounts/password/done/", user, None),
        ("/admin/", operator, None),
        ("/admin/dashboard/", operator, None),
        ("/admin/auth/user/", operator, None),
        (f"/admin/auth/user/{user.pk}/change/", operator, None),
        ("/admin/conversations/conversation/", operator, None),
        ("/admin/conversations/credittransaction/", operator, None),
        ("/c/999999/", user, None),  # the 404 page, logged in
        ("/s/no-such-token/", None, None),  # the 404 page, anonymous
    ]
    seen = {}
    for path, who, wait_for in pages:
        page = visit(chromium, live_daphne, path, who, wait_for=wait_for)
        seen[path] = (page.status, violations(page), page.js_errors)
        if path in (f"/c/{conversation.pk}/", "/c/999999/"):
            screenshot(page, "pages-chat-math" if page.status == 200 else "pages-404")
        page.context.close()
    assert {path: found for path, found in seen.items() if found[1] or found[2]} == {}
    assert {path: status for path, (status, _, _) in seen.items() if status != 200} == {
        "/c/999999/": 404,
        "/s/no-such-token/": 404,
    }


@pytest.mark.parametrize(
    "device", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_shared_page_reads_like_the_chat(chromium, live_daphne, chat_data, device):
    """Styles applied (not blocked), the answer in a full-width column, reasoning folded above it as in the chat."""
    _user, _operator, _conversation, link = chat_data
    page = visit(chromium, live_daphne, f"/s/{link.token}/", viewport=device, wait_for=".katex")
    name = "desktop" if device["width"] > 800 else "phone"
    screenshot(page, f"pages-share-{name}")
    assert violations(page) == []
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('.msg-assistant')].map(msg => {
          const box = (sel) => { const el = msg.querySelector(sel); if (!el) return null;
                                 const r = el.getBoundingClientRect(); return {x: r.x, w: r.width, h: r.height}; };
          return {answer: box('.markdown'), reasoning: box('.thinking'), avatar: box('.avatar'),
                  thread: document.querySelector('.messages').getBoundingClientRect().width};
        })"""
    )
    assert len(boxes) == 2
    for box in boxes:
        # One letter per line was the symptom: the answer takes most of the thread's width.
        assert box["answer"]["w"] > 0.75 * box["thread"] - 60, box
    with_reasoning, without = boxes
    # The reasoning sits in the answer's column, not in the 30 px avatar column beside it.
    assert with_reasoning["reasoning"]["x"] == pytest.approx(with_reasoning["answer"]["x"], abs=1)
    assert with_reasoning["reasoning"]["w"] == pytest.approx(with_reasoning["answer"]["w"], abs=1)
    assert with_reasoning["answer"]["x"] == pytest.approx(without["answer"]["x"], abs=1)
    # Folded by default, as the chat shows a finished answer's reasoning.
    assert page.evaluate("() => document.querySelector('.thinking').open") is False
    page.click(".thinking summary")
    screenshot(page, f"pages-share-{name}-reasoning-open")
    opened = page.evaluate("() => document.querySelector('.thinking-text').getBoundingClientRect().width")
    assert opened > 0.75 * boxes[0]["thread"] - 60
    # The user's message is a bubble on the right, as in the chat.
    bubble = page.evaluate(
        """() => { const r = document.querySelector('.msg-user .msg-body').getBoundingClientRect();
                   const t = document.querySelector('.messages').getBoundingClientRect();
                   return {right: t.right - r.right, left: r.left - t.left}; }"""
    )
    assert bubble["right"] < 40 < bubble["left"]
    page.context.close()


ALIGNED = (
    "$$\n\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}\n$$",
    "\n\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}\n",
)
# source -> the TeX KaTeX must have been given (its annotation), or None where the dollars are not math.
MATH_TABLE = [
    ("$a\\,b$", "a\\,b"),
    ("$$\\frac{1}{2}$$", "\\frac{1}{2}"),
    ("\\(x\\)", "x"),
    ("\\[y\\]", "y"),
    ("$x_1 * y_2 * z_3$", "x_1 * y_2 * z_3"),
    ("$\\{a \\mid b\\} \\;\\; \\text{<b>bold?</b>}$", "\\{a \\mid b\\} \\;\\; \\text{<b>bold?</b>}"),
    ALIGNED,
    ("$5 and $6", None),
    ("`$x$` in code", None),
]
ANNOTATIONS = """(source) => {
  const div = document.createElement('div');
  div.className = 'markdown';
  div.innerHTML = window.KimiMarkdown.renderMarkdown(source);
  document.body.append(div);
  window.KimiMarkdown.renderMath(div);
  const found = [...div.querySelectorAll('annotation[encoding="application/x-tex"]')].map(a => a.textContent);
  div.remove();
  return {found, text: div.textContent};
}"""


def test_chat_renders_math_with_katex_keeping_the_tex_byte_for_byte(open_page):
    page = open_page("/")
    for source, tex in MATH_TABLE:
        result = page.evaluate(ANNOTATIONS, source)
        assert result["found"] == ([tex] if tex is not None else []), source
        if tex is None:
            assert "$" in result["text"], source  # the dollars are shown, not eaten
    assert page.js_errors == []


def test_share_page_renders_the_same_math_from_the_server(chromium, live_daphne, make_user):
    owner = make_user("bob")
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="math")
    Message.objects.create(conversation=conversation, role="user", content="math please")
    cases = [source if "\n" in source else f"Case {i}: {source}" for i, (source, _) in enumerate(MATH_TABLE)]
    answer = "\n\n".join(cases)
    Message.objects.create(
        conversation=conversation, role="assistant", content=answer, status="complete", model="kimi-k2.6",
        completed_at=timezone.now(),
    )  # fmt: skip
    branches.link_linear(list(conversation.messages.order_by("id").values_list("id", flat=True)))  # one thread
    link = shares.create_share(conversation)
    page = visit(chromium, live_daphne, f"/s/{link.token}/", wait_for=".katex")
    found = page.evaluate(
        """() => [...document.querySelectorAll('annotation[encoding="application/x-tex"]')].map(a => a.textContent)"""
    )
    assert found == [tex for _, tex in MATH_TABLE if tex is not None]
    text = page.inner_text(".msg-assistant .markdown")
    assert "$5 and $6" in text and "$x$" in text
    assert violations(page) == [] and page.js_errors == []
    screenshot(page, "pages-share-math")
    page.context.close()


def test_markdown_image_becomes_a_link_labelled_with_its_alt_text(open_page, chromium, live_daphne, make_user):
    """docs/markdown.md: no image is ever loaded from an answer; the reader sees a link with the alt text."""
    page = open_page("/")
    html = page.evaluate(
        "(s) => window.KimiMarkdown.renderMarkdown(s)", "See ![a cat on a mat](https://example.com/cat.png) here"
    )
    assert "<img" not in html
    assert 'href="https://example.com/cat.png"' in html and ">a cat on a mat</a>" in html
    bare = page.evaluate("(s) => window.KimiMarkdown.renderMarkdown(s)", "![](https://example.com/x.png)")
    assert ">https://example.com/x.png</a>" in bare
    hostile = page.evaluate("(s) => window.KimiMarkdown.renderMarkdown(s)", "![x](javascript:alert(1))")
    assert "javascript:" not in hostile and "<img" not in hostile


def test_sidebar_search_lists_a_chat_once_with_a_plain_text_snippet(open_page, browser_user):
    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k2.6", title="Kyoto trip")
    Message.objects.create(conversation=conversation, role="user", content="Plan a trip to Kyoto")
    Message.objects.create(
        conversation=conversation, role="assistant", status="complete", model="kimi-k2.6", completed_at=timezone.now(),
        content="## Lodging\n\n**Book** the ryokan in [Kyoto](https://example.com/kyoto) early, with `cash`.",
    )  # fmt: skip
    page = open_page("/")
    page.fill("#search", "kyoto")
    page.wait_for_selector(".search-hit")
    # The results are put in place at once (one replaceChildren), so a second hit would be here already.
    assert page.locator(".search-hit").count() == 1
    assert page.inner_html(".search-hit .search-title") == "<mark>Kyoto</mark> trip"
    snippet = page.inner_html(".search-hit .search-snippet")
    assert snippet == "Lodging Book the ryokan in <mark>Kyoto</mark> early, with cash.", snippet
    screenshot(page, "pages-sidebar-search")
    assert page.js_errors == []
