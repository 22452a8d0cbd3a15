// Web search on an answer (docs/tools.md): "Searching: <query>" while the provider searches, the sources under the
// answer once it cites them. Fed by the message's `searches` and the `tool` frames (docs/websocket-protocol.md).
import { el } from "./ui.js";

const SAFE_URL = /^https?:\/\//i;

export const Searches = (Base) => class extends Base {
  onToolFrame(frame) {
    if (frame.conversation_id !== this.convId) return;
    const m = this.messages.get(frame.message_id);
    if (!m) return;
    const searches = (m.searches || []).map((s) => ({ ...s }));
    const found = searches.find((s) => s.query === frame.query && s.status === "searching");
    // The snapshot may already hold this search (stored before its frame went out).
    if (frame.status === "searching" && !found) searches.push({ query: frame.query, status: "searching", tokens: 0, sources: [] });
    else if (frame.status !== "searching" && found) found.status = frame.status;
    m.searches = searches;
    this.renderSearches(m, this.elements.get(m.id));
  }

  renderSearches(m, node) {
    if (!node || m.role !== "assistant") return;
    const searches = m.searches || [];
    const key = JSON.stringify(searches);
    if (node.renderedSearches === key) return;
    node.renderedSearches = key;
    let box = node.querySelector(".msg-searches");
    if (!searches.length) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = el("div.msg-searches");
      node.querySelector(".msg-body").append(box);
    }
    const live = searches.filter((s) => s.status === "searching");
    const sources = searches.flatMap((s) => s.sources || []).filter((s) => SAFE_URL.test(s.url || ""));
    const children = live.map((s) =>
      el("p.search-status.muted.small", { role: "status" },
        interpolate(gettext("Searching: %s"), [s.query || gettext("the web")])));
    if (sources.length) {
      // A node list, never a null: replaceChildren() would write a null out as the text "null".
      children.push(el("div.search-sources", {},
        el("p.muted.small", { text: gettext("Sources") }),
        el("ol", {}, ...sources.map((s) =>
          el("li", {}, el("a", { href: s.url, text: s.title || s.url, target: "_blank", rel: "noopener noreferrer" }))))));
    }
    box.replaceChildren(...children);
  }
};
