"""render_markdown: what a share page shows must never run code or load anything from elsewhere."""

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversations.services.history.render import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    FOOTNOTE_HREF,
    highlight_css,
    render_markdown,
)

PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<iframe src=https://evil.example></iframe>",
    "<style>body{background:url(https://evil.example/x)}</style>",
    "<a href='javascript:alert(1)'>x</a>",
    "<body onload=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](&#x6A;&#x61;&#x76;&#x61;script:alert(1))",
    "[click](javascript&colon;alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](file:///etc/passwd)",
    "<javascript:alert(1)>",
    "<data:text/html,<script>alert(1)</script>>",
    '[x](https://ok.example "title" onmouseover="alert(1)")',
    '[x](https://ok.example"onmouseover="alert(1))',
    "[x](<https://ok.example> onclick=alert(1))",
    "![x](https://tracker.example/pixel.png)",
    '![x" onerror="alert(1)](https://tracker.example/p.png)',
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "[![img](https://tracker.example/a.png)](javascript:alert(1))",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "```html\n<script>alert(1)</script>\n```",
    '```" onmouseover="alert(1)\ncode\n```',
    '```js" onload="alert(1)\ncode\n```',
    "    <script>alert(1)</script>",
    "`<script>alert(1)</script>`",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "<!-- --><script>alert(1)</script>",
    "<div style=\"background:url('https://evil.example')\">x</div>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "[ref]\n\n[ref]: https://ok.example 'a\" onclick=\"alert(1)'",
    "<a href=https://ok.example onclick=alert(1)>x</a>",
    "<form action=https://evil.example><input name=x></form>",
    "<object data=https://evil.example></object><embed src=https://evil.example>",
    "<meta http-equiv=refresh content=0;url=https://evil.example>",
    "<base href=https://evil.example/>",
]

DANGEROUS_SUBSTRINGS = ["<script", "<svg", "<iframe", "<style", "<img", "<object", "<embed", "<form", "<meta", "<base"]


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def elements(markup: str) -> list[tuple[str, dict]]:
    parser = _Collector()
    parser.feed(markup)
    parser.close()
    return parser.elements


def assert_inert(markup: str) -> None:
    """Every element and attribute is on the allow-list, and every link is an absolute http(s) or mailto URL."""
    lowered = markup.lower()
    for needle in DANGEROUS_SUBSTRINGS:
        assert needle not in lowered, (needle, markup)
    for tag, attrs in elements(markup):
        assert tag in ALLOWED_TAGS, (tag, markup)
        allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel", "target"} if tag == "a" else set())
        assert set(attrs) <= allowed, (tag, attrs, markup)
        assert not any(name.startswith("on") for name in attrs), markup
        in_page = FOOTNOTE_HREF.match(attrs.get("href") or "") is not None  # a footnote's link within the message
        if "href" in attrs and not in_page:
            # The parser has already decoded entities: this is the URL a browser would follow.
            assert attrs["href"].lower().startswith(("http://", "https://", "mailto:")), markup
        if tag == "a" and not in_page:
            assert attrs.get("rel") == "noopener noreferrer" and attrs.get("target") == "_blank", markup
        assert "style" not in attrs, markup  # the page's CSP refuses inline styles: alignment is a class


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_inert(payload):
    assert_inert(render_markdown(payload))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_inert_inside_other_markdown(payload):
    for wrapped in (f"> {payload}", f"- {payload}", f"**{payload}**", f"| h |\n|---|\n| {payload} |"):
        assert_inert(render_markdown(wrapped))


def test_raw_html_is_shown_as_text():
    assert render_markdown("<b>bold?</b>") == "<p>&lt;b&gt;bold?&lt;/b&gt;</p>\n"


def test_images_become_links_and_load_nothing():
    markup = render_markdown("![a cat](https://example.com/cat.png)")
    assert markup == (
        '<p><a href="https://example.com/cat.png" target="_blank" rel="noopener noreferrer">a cat</a></p>\n'
    )


def test_links_open_safely_and_relative_links_lose_their_href():
    markup = render_markdown("[site](https://example.com/a?b=1&c=2) [me](mailto:a@example.com) [rel](/logout/)")
    assert '<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">site</a>' in markup
    assert 'href="mailto:a@example.com"' in markup
    assert "/logout/" not in markup


def test_commonmark_tables_strikethrough_and_highlighted_code():
    markup = render_markdown(
        "# Title\n\n~~old~~ *new*\n\n| name | n |\n|:-----|--:|\n| a | 1 |\n\n```python\ndef f():\n    return 1\n```\n"
    )
    assert "<h1>Title</h1>" in markup and "<s>old</s>" in markup and "<em>new</em>" in markup
    assert '<th class="align-left">name</th>' in markup and '<td class="align-right">1</td>' in markup
    assert '<pre><code class="language-python"><span class="k">def</span>' in markup


def test_unknown_languages_are_escaped_plain_code():
    markup = render_markdown("```nosuchlang\n<b>x</b>\n```")
    assert markup == '<pre><code class="language-nosuchlang">&lt;b&gt;x&lt;/b&gt;\n</code></pre>\n'


def test_empty_input():
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_highlight_css_is_scoped():
    css = highlight_css()
    assert ".markdown pre code .k " in css
    assert all(line.startswith(".markdown pre code") for line in css.splitlines())


_MARKDOWN_PIECES = st.sampled_from(
    [
        "<",
        ">",
        "[",
        "]",
        "(",
        ")",
        "!",
        "`",
        "```",
        "\n",
        " ",
        "javascript:",
        "data:",
        "on",
        "=",
        '"',
        "'",
        "&#",
        ";",
        "script",
        "img",
        "svg",
        "src",
        "href",
        "http://x",
        "*",
        "|",
        "-",
        "#",
        "\\",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MARKDOWN_PIECES | st.text(max_size=5), max_size=40).map("".join))
def test_any_input_renders_inert(text):
    assert_inert(render_markdown(text))


def test_share_page_stylesheet_holds_the_current_highlight_colours():
    """The share page cannot use an inline <style> (CSP): its Pygments colours are a file that must not drift."""
    css = (Path(__file__).resolve().parents[1] / "static" / "css" / "pygments.css").read_text()
    assert highlight_css() in css


MATH_SOURCES = [
    ("$a\\,b$", "a\\,b", "math-inline"),
    ("$$\\frac{1}{2}$$", "\\frac{1}{2}", "math-display"),
    ("\\(x\\)", "x", "math-inline"),
    ("\\[y\\]", "y", "math-display"),
    ("$x_1 * y_2 * z$", "x_1 * y_2 * z", "math-inline"),  # would be emphasis to markdown-it
    ("$$\n\\sum_{k=1}^{n} k\n$$", "\n\\sum_{k=1}^{n} k\n", "math-display"),
]


@pytest.mark.parametrize(("source", "tex", "kind"), MATH_SOURCES)
def test_math_keeps_its_tex_source_byte_for_byte(source, tex, kind):
    rendered = render_markdown(f"Before {source} after" if "\n" not in source else source)
    match = re.search(r'class="math ([\w-]+)">(.*?)</(?:span|div)>', rendered, re.S)
    assert match, rendered
    assert match.group(1) == kind
    assert html.unescape(match.group(2)) == tex


@pytest.mark.parametrize("source", ["$5 and $6", "costs $5, or $10", "`$x$`", "$ x $", "$x$5"])
def test_dollar_signs_that_are_not_math_stay_text(source):
    assert 'class="math' not in render_markdown(source)


def test_math_source_cannot_become_markup():
    rendered = render_markdown("$<img src=x onerror=alert(1)>$ and $$</span><script>alert(1)</script>$$")
    assert "<img" not in rendered and "<script" not in rendered
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered


def test_task_lists_are_boxes_never_inputs():
    markup = render_markdown("- [x] done\n- [ ] open\n- [y] not a task\n\n1. [ ] numbered\n")
    assert '<li><span class="task-box task-done" role="img" aria-label="Done"></span>done</li>' in markup
    assert '<li><span class="task-box" role="img" aria-label="Not done"></span>open</li>' in markup
    assert "<li>[y] not a task</li>" in markup and "numbered" in markup and "<input" not in markup
    assert_inert(markup)


def test_footnotes_link_within_the_message_and_carry_its_id():
    markup = render_markdown("One[^a], two[^b], one again[^a], none[^x].\n\n[^b]: Bee.\n[^a]: Ay.\n", doc_id=42)
    assert '<sup class="footnote-ref"><a href="#fn-42-1" id="fnref-42-1">[1]</a></sup>' in markup
    assert '<a href="#fn-42-1" id="fnref-42-1:1">[1:1]</a>' in markup and "none[^x]" in markup
    assert '<li id="fn-42-1" class="footnote-item"><p>Ay. <a href="#fnref-42-1" class="footnote-backref">' in markup
    assert '<li id="fn-42-2" class="footnote-item"><p>Bee.' in markup
    assert not re.search(r'<a href="#[^"]*"[^>]*target=', markup)  # in-page links stay in the tab
    assert_inert(markup)


def test_only_footnote_anchors_are_kept_as_in_page_links():
    markup = render_markdown("[a](#top) [b](#fn-1) [c](/relative) [d](#fnref-9-2:1)")
    assert 'href="#top"' not in markup and 'href="/relative"' not in markup
    assert '<a href="#fn-1">b</a>' in markup and '<a href="#fnref-9-2:1">d</a>' in markup
