// The ONE place untrusted text (model output) becomes HTML: Markdown by marked, code by highlight.js, and every
// byte of the result through DOMPurify. Nothing else in the app may assign model or user text to innerHTML.
// Math is kept out of marked's hands (its escapes would eat "\,"): its TeX source goes through as the text of a
// span.math / div.math, and math.js renders it with KaTeX once the sanitized HTML is in the page.
// Images are never loaded (docs/markdown.md): an image becomes a link to it, labelled with its alt text.
import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlightjs/core.min.js";
import bash from "../vendor/highlightjs/languages/bash.min.js";
import c from "../vendor/highlightjs/languages/c.min.js";
import cpp from "../vendor/highlightjs/languages/cpp.min.js";
import csharp from "../vendor/highlightjs/languages/csharp.min.js";
import css from "../vendor/highlightjs/languages/css.min.js";
import diff from "../vendor/highlightjs/languages/diff.min.js";
import go from "../vendor/highlightjs/languages/go.min.js";
import java from "../vendor/highlightjs/languages/java.min.js";
import javascript from "../vendor/highlightjs/languages/javascript.min.js";
import json from "../vendor/highlightjs/languages/json.min.js";
import markdown from "../vendor/highlightjs/languages/markdown.min.js";
import plaintext from "../vendor/highlightjs/languages/plaintext.min.js";
import python from "../vendor/highlightjs/languages/python.min.js";
import rust from "../vendor/highlightjs/languages/rust.min.js";
import shell from "../vendor/highlightjs/languages/shell.min.js";
import sql from "../vendor/highlightjs/languages/sql.min.js";
import typescript from "../vendor/highlightjs/languages/typescript.min.js";
import xml from "../vendor/highlightjs/languages/xml.min.js";
import yaml from "../vendor/highlightjs/languages/yaml.min.js";
import { renderMath, renderMathAsAdded } from "./math.js";

const LANGUAGES = {
  bash, c, cpp, csharp, css, diff, go, java, javascript, json, markdown, plaintext, python, rust, shell, sql,
  typescript, xml, yaml,
};
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (ch) => ESCAPES[ch]);
}

function highlight(code, lang) {
  const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
  if (name && hljs.getLanguage(name)) {
    try {
      return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
    } catch {
      // fall through to plain text
    }
  }
  return escapeHtml(code);
}

// The grammar of conversations/services/history/render.py (keep the two in step). Inline $…$ follows Pandoc: no
// space just inside the dollars and no digit right after the closing one, so "$5 and $6" stays text.
const INLINE_MATH =
  /^(?:\$\$((?:\\[\s\S]|[^\\$])+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|\$(?![\s$])((?:\\[\s\S]|[^\\$])+?)(?<!\s)\$(?!\d))/;
const BLOCK_MATH = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n+|$)/;

function mathHtml(tex, display, tag = "span") {
  return `<${tag} class="math ${display ? "math-display" : "math-inline"}">${escapeHtml(tex)}</${tag}>`;
}

const MATH_EXTENSIONS = [
  {
    name: "mathBlock",
    level: "block",
    start(src) {
      return src.match(/^ {0,3}(?:\$\$|\\\[)/m)?.index;
    },
    tokenizer(src) {
      const match = BLOCK_MATH.exec(src);
      const text = match && (match[1] ?? match[2]);
      if (text && text.trim()) return { type: "mathBlock", raw: match[0], text };
    },
    renderer: (token) => mathHtml(token.text, true, "div") + "\n",
  },
  {
    name: "mathInline",
    level: "inline",
    start(src) {
      const index = src.search(/\$|\\[[(]/);
      return index < 0 ? undefined : index;
    },
    tokenizer(src) {
      const match = INLINE_MATH.exec(src);
      if (!match) return;
      const display = match[1] !== undefined || match[2] !== undefined;
      return { type: "mathInline", raw: match[0], text: match[1] ?? match[2] ?? match[3] ?? match[4], display };
    },
    renderer: (token) => mathHtml(token.text, token.display),
  },
];

// Footnotes ([^label] and "[^label]: text"), drawn as markdown-it's footnote plugin draws them on the share page
// (render.py): numbered by first reference, unreferenced notes left out, ids prefixed with the message's id.
// Definitions are read in marked's block pass, references in its inline pass, which runs after all blocks.
let notes = null; // per renderMarkdown call: {doc, defs: Map(label -> text), order: [label], refs: Map(label -> n)}
const FOOTNOTE_DEF = /^ {0,3}\[\^([^\]\s]+)\]:[ \t]*([^\n]*(?:\n(?: {2,}|\t)[^\n]*)*)(?:\n+|$)/;

const FOOTNOTE_EXTENSIONS = [
  {
    name: "footnoteDef",
    level: "block",
    start(src) {
      return src.match(/^ {0,3}\[\^[^\]\s]+\]:/m)?.index;
    },
    tokenizer(src) {
      const match = FOOTNOTE_DEF.exec(src);
      if (!match || !notes) return;
      if (!notes.defs.has(match[1])) notes.defs.set(match[1], match[2].replace(/\n[ \t]+/g, "\n"));
      return { type: "footnoteDef", raw: match[0] };
    },
    renderer: () => "",
  },
  {
    name: "footnoteRef",
    level: "inline",
    start(src) {
      const index = src.indexOf("[^");
      return index < 0 ? undefined : index;
    },
    tokenizer(src) {
      const match = /^\[\^([^\]\s]+)\]/.exec(src);
      if (!match || !notes || !notes.defs.has(match[1])) return;
      const label = match[1];
      if (!notes.order.includes(label)) notes.order.push(label);
      const seen = notes.refs.get(label) || 0;
      notes.refs.set(label, seen + 1);
      return { type: "footnoteRef", raw: match[0], n: notes.order.indexOf(label) + 1, seen };
    },
    renderer(token) {
      const id = "fn-" + notes.doc + token.n;
      const suffix = token.seen ? ":" + token.seen : "";
      return `<sup class="footnote-ref"><a href="#${id}" id="fnref-${notes.doc}${token.n}${suffix}">` +
        `[${token.n}${suffix}]</a></sup>`;
    },
  },
];

function footnotesHtml() {
  if (!notes || !notes.order.length) return "";
  const items = notes.order.map((label, i) => {
    const n = i + 1;
    const back = Array.from({ length: notes.refs.get(label) }, (_, k) => {
      const id = "fnref-" + notes.doc + n + (k ? ":" + k : "");
      return ` <a href="#${id}" class="footnote-backref">\u21a9\ufe0e</a>`;
    }).join("");
    const body = marked.parseInline(notes.defs.get(label), { async: false });
    return `<li id="fn-${notes.doc}${n}" class="footnote-item"><p>${body}${back}</p>\n</li>\n`;
  });
  return '<hr class="footnotes-sep">\n<section class="footnotes">\n<ol class="footnotes-list">\n' +
    items.join("") + "</ol>\n</section>\n";
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  extensions: [...MATH_EXTENSIONS, ...FOOTNOTE_EXTENSIONS],
  renderer: {
    // A column's alignment as a class (app.css): the sanitizer keeps neither align nor style attributes.
    tablecell(token) {
      const tag = token.header ? "th" : "td";
      const align = token.align ? ` class="align-${token.align}"` : "";
      return `<${tag}${align}>${this.parser.parseInline(token.tokens)}</${tag}>\n`;
    },
    // A task list's box: a span, never an <input> (no form controls in model output), as render.py draws it.
    checkbox({ checked }) {
      const label = escapeHtml(checked ? gettext("Done") : gettext("Not done"));
      return `<span class="task-box${checked ? " task-done" : ""}" role="img" aria-label="${label}"></span>`;
    },
    // Raw HTML in model output is shown as text, the way chat apps do: it is never markup.
    html({ text }) {
      return escapeHtml(text);
    },
    // Never an <img>: loading it would tell a third party who read the answer and when. A link the reader may
    // choose to open, labelled with the alt text (the address when there is none).
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    code({ text, lang }) {
      const label = (lang || "").trim().split(/\s+/)[0];
      return (
        '<div class="codeblock"><div class="codeblock-head"><span class="codeblock-lang">' +
        escapeHtml(label || "text") +
        '</span><button type="button" class="copy-code">' +
        escapeHtml(gettext("Copy")) +
        '</button></div><pre><code class="hljs">' +
        highlight(text, label) +
        "</code></pre></div>"
      );
    },
  },
});

const purify = DOMPurify(window);
const FORBID_TAGS = [
  "img", "iframe", "style", "form", "input", "textarea", "select", "option", "script", "svg", "math", "video",
  "audio", "source", "track", "picture", "object", "embed", "link", "meta", "base", "frame", "frameset",
];
const MARKDOWN_CONFIG = {
  FORBID_TAGS,
  FORBID_ATTR: ["style", "srcset", "action", "formaction", "background", "poster", "xlink:href"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#fn(?:ref)?-[\w:-]+$)/i, // "#fn…": a footnote's links in the page
  ALLOW_DATA_ATTR: false,
};
const SNIPPET_CONFIG = { ALLOWED_TAGS: ["mark"], ALLOWED_ATTR: [] };

purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    if ((node.getAttribute("href") || "").startsWith("#")) {
      node.removeAttribute("target"); // a footnote's link stays in the page
    } else if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    } else {
      node.removeAttribute("target");
    }
  }
});

/** Markdown (untrusted) -> sanitized HTML string, safe to assign to innerHTML. ``docId`` (the message's id) keeps
 * footnote anchors apart when the page shows several messages. */
export function renderMarkdown(text, { docId = "" } = {}) {
  notes = { doc: docId === "" ? "" : docId + "-", defs: new Map(), order: [], refs: new Map() };
  try {
    const html = marked.parse(String(text ?? ""), { async: false }) + footnotesHtml();
    return purify.sanitize(html, MARKDOWN_CONFIG);
  } finally {
    notes = null;
  }
}

/** A search snippet from the server: only <mark> survives, everything else becomes text. */
export function sanitizeSnippet(html) {
  return purify.sanitize(String(html ?? ""), SNIPPET_CONFIG);
}

// Math placeholders are rendered wherever rendered Markdown lands in the page.
renderMathAsAdded();

// For the browser tests, which check the sanitizer directly.
window.KimiMarkdown = { renderMarkdown, sanitizeSnippet, renderMath };
