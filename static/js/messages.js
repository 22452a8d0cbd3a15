// The message list: rendering each message, its footer and status, and keeping the thread scrolled while it streams.
import { renderMarkdown } from "./markdown.js";
import { errorText, formatCredits } from "./texts.js";
import { $, copyText, el, formatDateTime, icon, iconButton, toast } from "./ui.js";

export const ACTIVE = new Set(["pending", "streaming"]);
const STICK_PX = 80; // "at the bottom" tolerance for auto-scroll while streaming

/** "Thought for 12 s" / "Thought for 2 min 5 s". */
export function thoughtFor(ms) {
  const seconds = Math.max(1, Math.round(ms / 1000));
  if (seconds < 60) return interpolate(gettext("Thought for %s s"), [seconds]);
  return interpolate(gettext("Thought for %(min)s min %(sec)s s"), { min: Math.floor(seconds / 60), sec: seconds % 60 }, true);
}

export const MessageList = (Base) => class extends Base {
  upsertMessage(m, { render = true } = {}) {
    const existing = this.messages.get(m.id);
    let merged = m;
    if (existing && ACTIVE.has(m.status) && (existing.seq || 0) > (m.seq || 0)) {
      // An older snapshot (the history GET raced the live deltas): keep the longer text we already show.
      merged = { ...m, content: existing.content, reasoning: existing.reasoning, seq: existing.seq };
    }
    // Frames carry no version counts (they are read with the thread): keep the ones the thread came with.
    if (existing && existing.versions && !merged.versions) merged = { ...merged, versions: existing.versions };
    this.messages.set(m.id, merged);
    if (!render) return merged;
    if (!existing) this.renderThread();
    else this.updateMessageEl(merged);
    return merged;
  }

  renderThread() {
    const slots = this.currentThread();
    const nodes = [];
    if (this.hasMore) {
      nodes.push(
        el("div.load-earlier", {}, el("button.btn.ghost.small", {
          type: "button",
          text: gettext("Load earlier messages"),
          on: { click: () => this.loadEarlier().catch((err) => toast(err.message, { kind: "error" })) },
        })),
      );
    }
    const last = slots[slots.length - 1];
    this.lastAssistantId = last && last.head.role === "assistant" ? last.head.id : null;
    for (const slot of slots) {
      if (slot.head.role === "system") continue;
      const node = this.elementFor(slot.head);
      this.updateMessageEl(slot.head, node);
      nodes.push(node);
    }
    const empty = slots.length === 0;
    $("empty").hidden = !empty || this.convId !== null;
    this.messagesEl.replaceChildren(...nodes);
    this.root.classList.toggle("is-empty", empty && this.convId === null);
    this.updateComposer();
    this.updateScrollButton();
  }

  elementFor(m) {
    let node = this.elements.get(m.id);
    if (node) return node;
    if (m.role === "user") {
      node = el(
        "article.msg.msg-user",
        { id: "m-" + m.id },
        el("div.msg-body", {}, el("div.msg-content.plain")),
        el("div.msg-foot"),
      );
    } else {
      const thinking = el(
        "details.thinking",
        { hidden: true },
        el("summary", {}, icon("spark"), el("span.thinking-label")),
        el("div.thinking-text"),
      );
      thinking.addEventListener("toggle", () => {
        if (node.userToggledThinking === undefined && !node.autoToggling) node.userToggledThinking = true;
      });
      node = el(
        "article.msg.msg-assistant",
        { id: "m-" + m.id },
        el("div.avatar", { "aria-hidden": "true" }, "K"),
        el("div.msg-body", {}, thinking, el("div.msg-content.markdown"), el("div.msg-error", { hidden: true })),
        el("div.msg-foot"),
      );
    }
    node.rendered = { content: null, reasoning: null, footKey: null };
    this.elements.set(m.id, node);
    return node;
  }

  /** Bring a message's element up to date; cheap when nothing changed. */
  updateMessageEl(m, node = this.elements.get(m.id)) {
    if (!node) return;
    this.renderContent(m, node);
    this.renderFoot(m, node);
  }

  renderContent(m, node) {
    const active = ACTIVE.has(m.status);
    node.classList.toggle("streaming", active);
    node.dataset.status = m.status;
    const content = node.querySelector(".msg-content");
    if (node.rendered.content !== m.content) {
      if (m.role === "user") content.textContent = m.content;
      else content.innerHTML = renderMarkdown(m.content, { docId: m.id }); // the one sanitizer
      node.rendered.content = m.content;
    }
    if (m.role === "user") this.renderFiles(m, node);
    if (m.role !== "assistant") return;
    const thinking = node.querySelector(".thinking");
    const reasoning = m.reasoning || "";
    if (node.rendered.reasoning !== reasoning) {
      thinking.querySelector(".thinking-text").textContent = reasoning;
      node.rendered.reasoning = reasoning;
    }
    thinking.hidden = !reasoning;
    const thinkingNow = active && reasoning && !m.content;
    // Timed here while it streams; the stored time (reasoning_ms) replaces it once the answer is done, and on reload.
    if (thinkingNow && node.thinkStart === undefined) node.thinkStart = performance.now();
    if (!thinkingNow && node.thinkStart !== undefined && node.thinkEnd === undefined) node.thinkEnd = performance.now();
    const measured = m.reasoning_ms ?? (node.thinkEnd !== undefined ? node.thinkEnd - node.thinkStart : null);
    thinking.querySelector(".thinking-label").textContent = thinkingNow
      ? gettext("Thinking…")
      : measured !== null ? thoughtFor(measured) : gettext("Reasoning");
    thinking.classList.toggle("live", Boolean(thinkingNow));
    if (!node.userToggledThinking) {
      // Open while the model thinks, folded away once the answer starts.
      const shouldOpen = Boolean(thinkingNow);
      if (thinking.open !== shouldOpen) {
        node.autoToggling = true;
        thinking.open = shouldOpen;
        setTimeout(() => {
          node.autoToggling = false;
        }, 0);
      }
    }
    const waiting = active && !m.content && !reasoning;
    node.classList.toggle("waiting", waiting);
    // Only reasoning, no answer: say so, rather than show an empty answer (Continue is in the footer).
    const onlyThought = m.cut_off === "reasoning_only";
    if (node.rendered.onlyThought !== onlyThought) {
      node.rendered.onlyThought = onlyThought;
      if (onlyThought) content.replaceChildren(el("p.cut-off-note", { text: gettext("Thought, but ran out of room before answering") }));
      else if (!m.content) content.replaceChildren();
    }
    this.renderSearches(m, node);
  }

  renderFoot(m, node) {
    const versions = m.versions && m.versions.count > 1 ? m.versions : null;
    const streamingHere = this.isStreaming();
    const editable = m.role === "user" && typeof m.id === "number" && !m.superseded_by;
    const isLastAssistant = m.role === "assistant" && m.id === this.lastAssistantId;
    const key = JSON.stringify([
      m.status, m.cost, m.usage, m.error, m.model, versions, editable, isLastAssistant, streamingHere, typeof m.id,
      m.cut_off,
    ]);
    if (node.rendered.footKey === key) return;
    node.rendered.footKey = key;
    const foot = node.querySelector(".msg-foot");
    const parts = [];
    if (versions) {
      // Each version has its own branch below it: switching shows that branch's whole continuation.
      parts.push(
        el(
          "span.versions",
          { "aria-label": gettext("Versions") },
          iconButton("chevron-left", gettext("Previous version"), () => this.switchBranch(m, -1)),
          el("span.version-count", { text: versions.index + 1 + " / " + versions.count }),
          iconButton("chevron-right", gettext("Next version"), () => this.switchBranch(m, 1)),
        ),
      );
      parts[0].querySelectorAll("button")[0].disabled = !versions.previous || streamingHere;
      parts[0].querySelectorAll("button")[1].disabled = !versions.next || streamingHere;
    }
    if (m.role === "assistant") {
      const badge = this.statusBadge(m);
      if (badge) parts.push(badge);
      if (m.cut_off && !ACTIVE.has(m.status)) {
        parts.push(el("span.badge.badge-cut-off", {
          text: gettext("Cut off"),
          title: gettext("The answer reached its length limit before it was finished."),
        }));
        if (isLastAssistant && !streamingHere && typeof m.id === "number") {
          parts.push(el("button.btn.small.continue-answer", {
            type: "button", text: gettext("Continue"), on: { click: () => this.continueAnswer(m) },
          }));
        }
      }
    }
    const actions = el("span.msg-actions");
    if (typeof m.id === "number" && m.content) {
      actions.append(iconButton("copy", gettext("Copy"), () => copyText(m.content)));
    }
    if (editable && !streamingHere) {
      actions.append(iconButton("edit", gettext("Edit"), () => this.startEdit(m, node)));
    }
    if (isLastAssistant && !ACTIVE.has(m.status)) {
      actions.append(iconButton("refresh", gettext("Regenerate"), () => this.regenerate()));
    }
    if (m.role === "assistant" && typeof m.id === "number" && m.content && !ACTIVE.has(m.status)) {
      actions.append(...this.feedbackButtons(m));
    }
    const u = m.usage || {};
    if (m.role === "assistant" && !ACTIVE.has(m.status) && (u.total_tokens > 0 || Number(m.cost) > 0)) {
      const tip = [
        interpolate(gettext("Model: %s"), [m.model || "—"]),
        interpolate(gettext("Tokens: %(prompt)s in, %(completion)s out, %(total)s total"), {
          prompt: u.prompt_tokens ?? 0, completion: u.completion_tokens ?? 0, total: u.total_tokens ?? 0,
        }, true),
        u.cached_tokens ? interpolate(gettext("%s cached"), [u.cached_tokens]) : null,
        u.estimated ? gettext("(estimated)") : null,
        interpolate(gettext("Cost: %s credits"), [formatCredits(m.cost ?? "0")]),
        m.completed_at ? formatDateTime(m.completed_at) : null,
      ].filter(Boolean).join("\n");
      actions.append(
        el("span.usage", { tabindex: "0", "data-tip": tip, "aria-label": tip }, icon("info"),
          el("span.usage-short", { text: (u.total_tokens ?? 0) + " " + gettext("tokens") }),
          u.cached_tokens ? el("span.usage-cached", { text: interpolate(gettext("%s cached"), [u.cached_tokens]) }) : null),
      );
    }
    parts.push(actions);
    foot.replaceChildren(...parts);

    const errorBox = node.querySelector(".msg-error");
    if (errorBox) {
      const failed = m.status === "error" || m.status === "interrupted";
      errorBox.hidden = !failed;
      if (failed) {
        const reason = (m.error && errorText(m.error.code, m.error.message)) || (m.status === "interrupted"
          ? gettext("The answer was interrupted before it finished.")
          : gettext("The answer failed."));
        const children = [icon("alert"), el("span", { text: reason })];
        if (isLastAssistant) {
          children.push(el("button.btn.small", { type: "button", text: gettext("Retry"), on: { click: () => this.regenerate() } }));
        }
        errorBox.replaceChildren(...children);
      }
    }
  }

  statusBadge(m) {
    const labels = {
      pending: gettext("Waiting…"),
      streaming: gettext("Writing…"),
      stopped: gettext("Stopped"),
      error: gettext("Error"),
      interrupted: gettext("Interrupted"),
    };
    if (!labels[m.status]) return null;
    return el("span.badge.badge-" + m.status, { text: labels[m.status] });
  }

  // A streaming answer re-renders only its own element, at most once per animation frame.
  scheduleRender(m) {
    this.dirty.add(m.id);
    if (this.rafId === null) this.rafId = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.rafId = null;
    const stick = this.nearBottom();
    for (const id of this.dirty) {
      const m = this.messages.get(id);
      const node = this.elements.get(id);
      if (m && node) this.renderContent(m, node);
    }
    this.dirty.clear();
    if (stick) this.scrollToBottom();
    this.updateScrollButton();
  }

  // The "scroll to the bottom" button: shown whenever the thread is scrolled up from its end (an answer streaming
  // below then keeps going without dragging the reader along).
  bindScrollButton() {
    const button = $("scroll-bottom");
    button.addEventListener("click", () => {
      this.thread.scrollTo({ top: this.thread.scrollHeight, behavior: "smooth" });
      // The answer grows while the smooth scroll runs: land on its end, not where the end was.
      this.thread.addEventListener("scrollend", () => this.scrollToBottom(), { once: true });
    });
    this.thread.addEventListener("scroll", () => this.updateScrollButton(), { passive: true });
  }

  updateScrollButton() {
    const button = $("scroll-bottom");
    const show = this.messagesEl.childElementCount > 0 && !this.nearBottom();
    if (button.hidden === show) button.hidden = !show;
    button.classList.toggle("streaming", show && this.isStreaming());
  }

  nearBottom() {
    return this.thread.scrollHeight - this.thread.scrollTop - this.thread.clientHeight < STICK_PX;
  }

  scrollToBottom() {
    this.thread.scrollTop = this.thread.scrollHeight;
    this.updateScrollButton();
  }

  isStreaming() {
    for (const m of this.messages.values()) if (ACTIVE.has(m.status) && m.role === "assistant") return true;
    return false;
  }

  sendPending() {
    for (const p of this.pending.values()) if (p.convId === this.convId) return true;
    return false;
  }
};
