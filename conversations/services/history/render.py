"""Markdown → safe HTML for pages the server renders (the public share page).

Three layers, each enough on its own for the common attacks, together for the uncommon ones:
1. markdown-it with ``html=False``: raw HTML in a message is shown as text, never parsed as markup.
2. markdown-it's own link validation refuses ``javascript:``, ``vbscript:``, ``file:`` and ``data:`` URLs.
3. nh3 (ammonia) cleans the result against a short allow-list of tags and attributes, so a bug in 1 or 2 (or in a
   plugin) still cannot produce a script, an event handler, a style sheet or a remote resource.

Images are never emitted: a share page must not make the reader's browser fetch anything from a third party (that
would leak who read it and when). An image becomes a plain link to it instead (docs/markdown.md).

Math (``$…$``, ``\\(…\\)``, ``$$…$$``, ``\\[…\\]``, the grammar of static/js/markdown.js) is not rendered here: its
TeX source is kept byte for byte as the text of a ``span.math`` / ``div.math``, which the page's KaTeX
(static/js/math.js) renders in the browser. So markdown-it never sees it (``\\,`` would lose its backslash).
"""

from __future__ import annotations

import functools
import html
import re

import nh3
from django.utils.translation import gettext
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.footnote import footnote_plugin
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
        "div",
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
        "section",
        "span",
        "strong",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
# ``class`` carries Pygments' token classes, markdown-it's ``language-x`` and a table column's ``align-…``.
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "id", "class"},  # id, class, "#…" hrefs: footnote references and their way back
    "code": {"class"},
    "div": {"class"},
    "span": {"class", "role", "aria-label"},  # role and label: a task list's box says whether it is done
    "pre": {"class"},
    "ol": {"start", "class"},
    "li": {"id", "class"},
    "hr": {"class"},
    "section": {"class"},
    "sup": {"class"},
    "th": {"class"},  # align-left/center/right: the page's CSP refuses style attributes
    "td": {"class"},
}
# Dropped with their content, not just unwrapped: their text is never something a reader should see as prose.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "noscript", "template"})
SAFE_URL_PREFIXES = ("http://", "https://", "mailto:")
FOOTNOTE_HREF = re.compile(r"#fn(?:ref)?-[\w-]+(?::\d+)?\Z")
HIGHLIGHT_CSS_SCOPE = ".markdown pre code"


def _keep_safe_urls(tag: str, attribute: str, value: str) -> str | None:
    """nh3 lets relative URLs through; we want only absolute http(s) and mailto links, and a footnote's links within
    the message (``#fn-…``, ``#fnref-…``), nothing else."""
    if attribute == "href" and not (value.strip().lower().startswith(SAFE_URL_PREFIXES) or FOOTNOTE_HREF.match(value)):
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


# The same grammar as static/js/markdown.js (keep the two in step). Inline ``$…$`` follows Pandoc: no space just
# inside the dollars and no digit right after the closing one, so "$5 and $6" stays text.
INLINE_MATH = re.compile(
    r"\$\$(?P<dollars>(?:\\[\s\S]|[^\\$])+?)\$\$"
    r"|\\\[(?P<brackets>[\s\S]+?)\\\]"
    r"|\\\((?P<parens>[\s\S]+?)\\\)"
    r"|\$(?![\s$])(?P<dollar>(?:\\[\s\S]|[^\\$])+?)(?<!\s)\$(?!\d)"
)
BLOCK_MATH_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"))


def _math_inline(state, silent: bool) -> bool:
    match = INLINE_MATH.match(state.src, state.pos, state.posMax)
    if match is None:
        return False
    if not silent:
        token = state.push("math_inline", "span", 0)
        token.content = next(group for group in match.groups() if group is not None)
        token.meta = {"display": match.group("dollar") is None and match.group("parens") is None}
    state.pos = match.end()
    return True


def _math_block(state, start_line: int, end_line: int, silent: bool) -> bool:
    """``$$`` or ``\\[`` opening a line, up to the first closing delimiter that ends a line."""
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    begin = state.bMarks[start_line] + state.tShift[start_line]
    delimiters = next((pair for pair in BLOCK_MATH_DELIMITERS if state.src.startswith(pair[0], begin)), None)
    if delimiters is None:
        return False
    opening, closing = delimiters
    begin += len(opening)
    line, search_from = start_line, begin
    while line < end_line:
        line_end = state.eMarks[line]
        found = state.src.find(closing, search_from, line_end)
        while found != -1 and state.src[found + len(closing) : line_end].strip():
            found = state.src.find(closing, found + 1, line_end)
        if found != -1:
            break
        line += 1
        search_from = state.bMarks[line] if line < end_line else line_end
    else:
        return False
    if not state.src[begin:found].strip():
        return False
    if not silent:
        token = state.push("math_block", "div", 0)
        token.content = state.src[begin:found]
        token.map = [start_line, line + 1]
        token.block = True
    state.line = line + 1
    return True


def _render_math_inline(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    kind = "math-display" if token.meta.get("display") else "math-inline"
    return f'<span class="math {kind}">{html.escape(token.content, quote=False)}</span>'


def _render_math_block(self, tokens, idx, options, env) -> str:
    return f'<div class="math math-display">{html.escape(tokens[idx].content, quote=False)}</div>\n'


TASK_MARKER = re.compile(r"\[([ xX])\][ \t]")


def _task_lists(state) -> None:
    """GitHub's task lists: a list item whose text starts with ``[ ]`` or ``[x]`` gets a box (a span, never an
    <input>), as static/js/markdown.js draws it."""
    tokens = state.tokens
    for index in range(2, len(tokens)):
        inline = tokens[index]
        if inline.type != "inline" or tokens[index - 1].type != "paragraph_open":
            continue
        if tokens[index - 2].type != "list_item_open" or not inline.children:
            continue
        first = inline.children[0]
        match = TASK_MARKER.match(first.content) if first.type == "text" else None
        if match is None:
            continue
        first.content = first.content[match.end() :]
        box = Token("task_box", "span", 0)
        box.meta = {"done": match.group(1) != " "}
        inline.children.insert(0, box)


def _table_alignment_classes(state) -> None:
    """markdown-it aligns a table column with ``style="text-align:…"``, which the page's Content-Security-Policy
    (no inline styles) ignores: a class instead, as static/js/markdown.js writes it."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", None)
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrSet("class", "align-" + style.removeprefix("text-align:").strip())


def _render_task_box(self, tokens, idx, options, env) -> str:
    done = tokens[idx].meta["done"]
    label = html.escape(gettext("Done") if done else gettext("Not done"))
    return f'<span class="task-box{" task-done" if done else ""}" role="img" aria-label="{label}"></span>'


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(["table", "strikethrough"])
    md.use(footnote_plugin)
    md.core.ruler.push("task_lists", _task_lists)
    md.core.ruler.push("table_alignment", _table_alignment_classes)
    md.add_render_rule("task_box", _render_task_box)
    md.add_render_rule("image", _render_image)
    md.inline.ruler.before("escape", "math_inline", _math_inline)
    md.block.ruler.before("fence", "math_block", _math_block, {"alt": ["paragraph", "reference", "blockquote", "list"]})
    md.add_render_rule("math_inline", _render_math_inline)
    md.add_render_rule("math_block", _render_math_block)
    return md


# nh3 opens every link in a new tab; a footnote's links stay in the page. Matched on nh3's own output only.
_IN_PAGE_LINK = re.compile(r'(<a href="#[^"]*"[^>]*?) target="_blank" rel="noopener noreferrer"')


def render_markdown(text: str, *, doc_id: str | int = "") -> str:
    """Untrusted Markdown (a model's answer, a user's message) as HTML that is safe to insert into a page.
    ``doc_id`` (the message's id) keeps footnote anchors apart when a page shows several messages."""
    clean = _cleaner.clean(_parser().render(text or "", {"docId": str(doc_id)} if doc_id != "" else {}))
    return _IN_PAGE_LINK.sub(r"\1", clean)


def markdown_to_text(text: str) -> str:
    """What a reader sees of Markdown, as plain text on one line: no syntax, no link targets, code and TeX as
    written (search snippets show this, not ``**bold**`` or ``[label](https://…)``)."""
    parts: list[str] = []
    for token in _parser().parse(text or ""):
        if token.type in ("fence", "code_block", "math_block"):
            parts.append(token.content)
        elif token.type == "inline":
            for child in token.children or []:
                if child.type in ("text", "code_inline", "math_inline", "image"):
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
            parts.append(" ")
    return " ".join("".join(parts).split())


@functools.cache
def highlight_css() -> str:
    """The Pygments colours for code blocks, scoped to rendered Markdown: the content of static/css/pygments.css (a
    file, because the Content-Security-Policy refuses an inline <style>; tests/test_render.py keeps the two equal)."""
    rules = HtmlFormatter().get_style_defs(HIGHLIGHT_CSS_SCOPE).splitlines()
    # Pygments adds a few page-wide rules (pre, line numbers); keep only the scoped token colours.
    return "\n".join(rule for rule in rules if rule.startswith(HIGHLIGHT_CSS_SCOPE))
