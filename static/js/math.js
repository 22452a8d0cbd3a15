// Math in rendered Markdown: markdown.js (chat) and the server (share page) leave each formula's TeX source, byte
// for byte, as the text of a span.math / div.math; KaTeX renders it here, after sanitizing. KaTeX builds DOM nodes
// and sets their styles through the CSSOM, which the Content-Security-Policy (style-src 'self') allows; its HTML
// string output would need inline style attributes, which the policy blocks.
import katex from "../vendor/katex/katex.esm.js";

const OPTIONS = {
  throwOnError: false, // a formula KaTeX cannot read is shown as its source, in the error colour
  trust: false, // no \href, \url, \includegraphics, \htmlClass…: a formula cannot make a link or load anything
  strict: "ignore",
  maxSize: 20, // em: a \rule or \kern cannot cover the page
  maxExpand: 1000,
};
const PENDING = "span.math:not(.math-rendered), div.math:not(.math-rendered)";

function renderOne(el) {
  el.classList.add("math-rendered");
  const tex = el.textContent;
  try {
    katex.render(tex, el, { ...OPTIONS, displayMode: el.classList.contains("math-display") });
  } catch {
    el.textContent = tex; // not a ParseError (those are drawn by KaTeX): keep the source readable
  }
}

/** Render every math placeholder in `root` (an element or the document) that is not rendered yet. */
export function renderMath(root) {
  if (root.matches?.(PENDING)) renderOne(root);
  for (const el of root.querySelectorAll?.(PENDING) ?? []) renderOne(el);
}

/** Render placeholders as they are added anywhere under `root`, before the next paint (mutation callbacks run
 * as microtasks), so code that assigns rendered Markdown needs to know nothing about math. */
export function renderMathAsAdded(root = document.documentElement) {
  renderMath(root);
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) renderMath(node);
  }).observe(root, { childList: true, subtree: true });
}
