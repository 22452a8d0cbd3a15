"""Markdown → safe HTML for pages the server renders (the public share page).

Three layers, each enough on its own for the common attacks, together for the uncommon ones:
1. markdown-it with ``html=False``: raw HTML in a message is shown as text, never parsed as markup.
2. markdown-it's own link validation refuses ``javascript:``, ``vbscript:``, ``file:`` and ``data:`` URLs.
3. nh3 (ammonia) cleans the result against a short allow-list of tags and attributes, so a bug in 1 or 2 (or in a
   plugin) still cannot produce a script, an event handler, a style sheet or a remote resource.

Images are never emitted: a share page must not make the reader's browser fetch anything from a third party (that
would leak who read it and when). An image becomes a plain link to it instead.
"""

from __future__ import annotations

import functools
import html

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

# Everything markdown-it (commonmark + tables + strikethrough) produces, minus <img>.
ALLOWED_TAGS = frozenset(
    {
        "a",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "span",
        "strong",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
# ``class`` carries Pygments' token classes and markdown-it's ``language-x``; ``style`` only table alignment.
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "pre": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
# Dropped with their content, not just unwrapped: their text is never something a reader should see as prose.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "noscript", "template"})
SAFE_URL_PREFIXES = ("http://", "https://", "mailto:")
HIGHLIGHT_CSS_SCOPE = ".markdown pre code"


def _keep_safe_urls(tag: str, attribute: str, value: str) -> str | None:
    """nh3 lets relative URLs through; we want only absolute http(s) and mailto links, nothing else."""
    if attribute == "href" and not value.strip().lower().startswith(SAFE_URL_PREFIXES):
        return None
    return value


_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_keep_safe_urls,
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    filter_style_properties={"text-align"},
    strip_comments=True,
)


def _highlight(code: str, lang: str, _attrs) -> str:
    """Pygments spans for a fenced block with a known language; "" lets markdown-it escape it plainly."""
    if not lang:
        return ""
    try:
        lexer = get_lexer_by_name(lang.split()[0], stripall=False)
    except ClassNotFound:
        return ""
    # nowrap: markdown-it wraps the result in <pre><code class="language-…">, which the CSS scope targets.
    return highlight(code, lexer, HtmlFormatter(nowrap=True))


def _render_image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    label = self.renderInlineAsText(token.children or [], options, env) or src
    return f'<a href="{html.escape(src)}">{html.escape(label)}</a>'


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image)
    return md


def render_markdown(text: str) -> str:
    """Untrusted Markdown (a model's answer, a user's message) as HTML that is safe to insert into a page."""
    return _cleaner.clean(_parser().render(text or ""))


@functools.cache
def highlight_css() -> str:
    """The Pygments colours for code blocks, scoped to rendered Markdown (for an inline <style> on the page)."""
    rules = HtmlFormatter().get_style_defs(HIGHLIGHT_CSS_SCOPE).splitlines()
    # Pygments adds a few page-wide rules (pre, line numbers); keep only the scoped token colours.
    return "\n".join(rule for rule in rules if rule.startswith(HIGHLIGHT_CSS_SCOPE))
