// The chat page: the open conversation's messages, the composer, settings, and the websocket frames that drive
// them (docs/websocket-protocol.md). Streaming answers re-render only their own element, once per frame.
import { ApiError, api, urls } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { ChatSocket } from "./socket.js";
import { ShareDialog, Sidebar, setupImportExport } from "./sidebar.js";
import { copyText, el, formatDateTime, icon, iconButton, toast } from "./ui.js";

const ACTIVE = new Set(["pending", "streaming"]);
const STICK_PX = 80; // "at the bottom" tolerance for auto-scroll while streaming

const $ = (id) => document.getElementById(id);

/** What to tell the user for an error code, in their language, with the details the server sent as fields. */
function errorText(code, fallback, details = {}) {
  const seconds = details.retry_after;
  const known = {
    empty_message: gettext("Type a message first."),
    message_too_long: details.limit
      ? interpolate(gettext("The message is too long (the limit is %s characters)."), [details.limit])
      : gettext("The message is too long."),
    unknown_model: gettext("That model is not available."),
    not_found: gettext("This chat no longer exists."),
    busy: gettext("An answer is still being written in this chat."),
    too_many_answers: gettext("Too many answers are being written at once. Wait for one to finish."),
    context_too_long: gettext("The message is too long for this model."),
    insufficient_credits: details.estimated_cost !== undefined
      ? interpolate(
        gettext("Not enough credits: this message may cost up to %(cost)s and you have %(balance)s."),
        { cost: formatCredits(details.estimated_cost), balance: formatCredits(details.balance) }, true)
      : gettext("Not enough credits for this message."),
    rate_limited: seconds
      ? interpolate(gettext("Too many requests. Try again in %s seconds."), [seconds])
      : gettext("Too many requests. Try again in a moment."),
    invalid_parameter: gettext("A setting of this chat is not accepted by the chosen model."),
    server_error: gettext("Something went wrong on our side. Try again."),
    server_shutdown: gettext("The server restarted while this answer was being written."),
    worker_lost: gettext("The server stopped while this answer was being written; it was cut off."),
    time_limit: gettext("The answer took longer than the server allows and was cut off."),
    bad_request: gettext("Kimi rejected the request as invalid."),
    content_filtered: gettext("Kimi declined this request because of its content policy."),
    model_not_found: gettext("This model is not available. Pick another model."),
    upstream_auth_failed: gettext("The server's Kimi API key was rejected. Please contact the administrator."),
    upstream_quota_exceeded: gettext("The Kimi account of this server is out of quota. Please contact the administrator."),
    upstream_rate_limited: gettext("Kimi is receiving too many requests right now. Please try again shortly."),
    upstream_overloaded: gettext("Kimi is overloaded right now. Please try again shortly."),
    upstream_server_error: gettext("Kimi had an internal error. Please try again."),
    upstream_timeout: gettext("Kimi took too long to answer."),
    upstream_connection_error: gettext("Could not reach the Kimi service."),
    upstream_interrupted: gettext("The answer was cut off before it finished."),
    upstream_bad_response: gettext("Kimi sent a response this server could not read."),
  };
  return known[code] || fallback || gettext("Something went wrong.");
}

function formatCredits(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const digits = Math.abs(n) > 0 && Math.abs(n) < 1 ? 4 : 2;
  return n.toLocaleString(document.documentElement.lang || undefined, {
    minimumFractionDigits: 2,
    maximumFractionDigits: digits,
  });
}

class ChatApp {
  constructor(root) {
    this.root = root;
    this.thread = $("thread");
    this.messagesEl = $("messages");
    this.prompt = $("prompt");
    this.sendButton = $("send");
    this.stopButton = $("stop");
    this.modelPicker = $("model-picker");
    this.titleEl = $("chat-title");

    this.convId = null;
    this.conv = null;
    this.messages = new Map(); // id -> message dict (every version)
    this.elements = new Map(); // id -> element
    this.versionView = new Map(); // current message id -> the version shown
    this.hasMore = false;
    this.loadToken = 0;
    this.pending = new Map(); // client_msg_id -> {kind, convId, content, localId}
    this.ops = new Map(); // conversation id -> {kind, oldUserId, oldAssistantId}: an edit/regenerate in flight
    this.resyncing = false;
    this.dirty = new Set();
    this.rafId = null;
    this.models = [];
    this.defaultModel = null;
    this.draftModel = null; // the model picked for a chat that does not exist yet

    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    this.socket = new ChatSocket(scheme + window.location.host + "/ws/chat/");
    this.sidebar = new Sidebar(this);
    this.shares = new ShareDialog();
    window.kimichat = this; // handy in the console, and for the browser tests
  }

  async start() {
    this.bindComposer();
    this.bindChrome();
    this.bindKeys();
    setupImportExport(this);
    this.socket.addEventListener("frame", (e) => this.onFrame(e.detail));
    this.socket.addEventListener("status", (e) => this.onSocketStatus(e.detail));
    this.loadMe();
    const modelsLoaded = this.loadModels();
    this.sidebar.reload();
    const initial = Number(this.root.dataset.conversationId) || null;
    window.addEventListener("popstate", () => {
      const match = window.location.pathname.match(/^\/c\/(\d+)\/?$/);
      this.openConversation(match ? Number(match[1]) : null, { push: false });
    });
    await modelsLoaded;
    await this.openConversation(initial, { push: false });
    this.socket.connect();
    this.ready = true;
    document.documentElement.dataset.ready = "1";
    if (this.submitWhenReady) {
      this.submitWhenReady = false;
      this.submit();
    }
  }

  // --- header: user, balance, models ------------------------------------------------------------------------
  async loadMe() {
    try {
      const me = await api(urls.me());
      this.setBalance(me.balance);
    } catch {
      this.setBalance(null);
    }
  }

  setBalance(balance) {
    const box = $("balance");
    box.querySelector("[data-amount]").textContent = formatCredits(balance);
    box.title = balance === null || balance === undefined ? "" : interpolate(gettext("%s credits left"), [balance]);
  }

  async loadModels() {
    try {
      const data = await api(urls.models());
      this.models = data.models || [];
      this.defaultModel = data.default || (this.models[0] && this.models[0].id) || null;
    } catch {
      this.models = [];
    }
    this.renderModelPicker();
  }

  capabilities(model) {
    const found = this.models.find((m) => m.id === model);
    return (found && found.capabilities) || {};
  }

  currentModel() {
    if (this.conv) return this.conv.model || this.defaultModel;
    return this.draftModel || this.defaultModel;
  }

  renderModelPicker() {
    const current = this.currentModel();
    const ids = this.models.map((m) => m.id);
    if (current && !ids.includes(current)) ids.unshift(current);
    this.modelPicker.replaceChildren(...ids.map((id) => el("option", { value: id, text: id })));
    if (current) this.modelPicker.value = current;
    this.modelPicker.disabled = ids.length === 0;
  }

  // --- opening conversations --------------------------------------------------------------------------------
  async openConversation(id, { push = true, focusMessage = null } = {}) {
    const token = ++this.loadToken;
    this.convId = id;
    this.conv = null;
    this.draft = null; // settings chosen for a chat that does not exist yet: sent with its first message
    this.messages.clear();
    this.elements.clear();
    this.versionView.clear();
    this.dirty.clear();
    this.hasMore = false;
    this.sidebar.setActive(id);
    this.closeSidebar();
    if (push) {
      const path = id ? "/c/" + id + "/" : "/";
      if (window.location.pathname !== path) history.pushState({}, "", path);
    }
    this.socket.subscribe(null);
    if (id === null) {
      this.renderHeader();
      this.renderThread();
      this.updateComposer();
      this.prompt.focus();
      return;
    }
    this.messagesEl.replaceChildren(el("div.thread-loading", { text: gettext("Loading…") }));
    let data;
    try {
      data = await api(urls.conversation(id) + "?versions=1&limit=100");
    } catch (err) {
      if (token !== this.loadToken) return;
      if (err instanceof ApiError && err.status === 404) {
        toast(gettext("This chat no longer exists."), { kind: "error" });
        this.openConversation(null);
      } else {
        this.messagesEl.replaceChildren(el("div.thread-error", { text: err.message }));
      }
      return;
    }
    if (token !== this.loadToken) return;
    this.applyConversation(data);
    for (const m of data.messages) this.upsertMessage(m, { render: false });
    this.hasMore = data.has_more;
    this.renderThread();
    this.updateComposer();
    // Subscribe after the history is in: the snapshot and deltas then extend what is shown.
    this.socket.subscribe(id);
    if (focusMessage) {
      const node = this.elements.get(focusMessage);
      if (node) {
        node.scrollIntoView({ block: "center" });
        node.classList.add("flash-hit");
        setTimeout(() => node.classList.remove("flash-hit"), 2000);
      }
    } else {
      this.scrollToBottom();
    }
    if (window.matchMedia("(min-width: 800px)").matches) this.prompt.focus();
  }

  async loadEarlier() {
    const ids = [...this.messages.keys()].filter((k) => typeof k === "number");
    if (!ids.length || !this.convId) return;
    const before = Math.min(...ids);
    const token = this.loadToken;
    const previousHeight = this.thread.scrollHeight;
    const data = await api(urls.conversation(this.convId) + "?versions=1&limit=100&before=" + before);
    if (token !== this.loadToken) return;
    for (const m of data.messages) this.upsertMessage(m, { render: false });
    this.hasMore = data.has_more;
    this.renderThread();
    this.thread.scrollTop += this.thread.scrollHeight - previousHeight;
  }

  applyConversation(conv) {
    const { messages: _m, has_more: _h, ...rest } = conv;
    this.conv = { ...(this.conv || {}), ...rest };
    this.sidebar.upsert(this.conv);
    this.renderHeader();
  }

  renderHeader() {
    const title = this.conv ? this.conv.title || gettext("New chat") : gettext("New chat");
    this.titleEl.textContent = title;
    document.title = title + " · KimiChat";
    this.renderModelPicker();
  }

  conversationDeleted(id) {
    if (this.convId === id) this.openConversation(null);
  }

  async patchConversation(id, changes) {
    const conv = await api(urls.conversation(id), { method: "PATCH", body: changes });
    this.sidebar.upsert(conv);
    if (id === this.convId) this.applyConversation(conv);
    return conv;
  }

  // --- messages -----------------------------------------------------------------------------------------------
  upsertMessage(m, { render = true } = {}) {
    const existing = this.messages.get(m.id);
    let merged = m;
    if (existing && ACTIVE.has(m.status) && (existing.seq || 0) > (m.seq || 0)) {
      // An older snapshot (the history GET raced the live deltas): keep the longer text we already show.
      merged = { ...m, content: existing.content, reasoning: existing.reasoning, seq: existing.seq };
    }
    this.messages.set(m.id, merged);
    if (!render) return merged;
    if (!existing) this.renderThread();
    else this.updateMessageEl(merged);
    return merged;
  }

  /** The messages of the live thread, each with its earlier versions, oldest first. */
  currentThread() {
    const all = [...this.messages.values()];
    const byId = new Map(all.map((m) => [m.id, m]));
    const finalOf = (m) => {
      let cur = m;
      const seen = new Set();
      while (cur.superseded_by && byId.has(cur.superseded_by) && !seen.has(cur.id)) {
        seen.add(cur.id);
        cur = byId.get(cur.superseded_by);
      }
      return cur;
    };
    const versions = new Map();
    for (const m of all) {
      const head = finalOf(m);
      if (!versions.has(head.id)) versions.set(head.id, []);
      versions.get(head.id).push(m);
    }
    const order = (a, b) => {
      const la = typeof a.id !== "number";
      const lb = typeof b.id !== "number";
      if (la !== lb) return la ? 1 : -1; // optimistic local messages go last
      if (la) return a.localOrder - b.localOrder;
      return a.id - b.id;
    };
    const heads = [...versions.keys()].map((id) => byId.get(id)).sort(order);
    return heads.map((head) => ({ head, versions: versions.get(head.id).sort(order) }));
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
    const lastUser = [...slots].reverse().find((s) => s.head.role === "user");
    const lastAssistant = [...slots].reverse().find((s) => s.head.role === "assistant");
    this.lastUserId = lastUser ? lastUser.head.id : null;
    this.lastAssistantId = lastAssistant && slots[slots.length - 1] === lastAssistant ? lastAssistant.head.id : null;
    for (const slot of slots) {
      if (slot.head.role === "system") continue;
      const shownId = this.versionView.get(slot.head.id) ?? slot.head.id;
      const index = slot.versions.findIndex((v) => v.id === shownId);
      const shown = index >= 0 ? slot.versions[index] : slot.head;
      const node = this.elementFor(shown);
      node.threadSlot = { head: slot.head, versions: slot.versions, index: index >= 0 ? index : slot.versions.length - 1 };
      this.updateMessageEl(shown, node);
      nodes.push(node);
    }
    const empty = slots.length === 0;
    $("empty").hidden = !empty || this.convId !== null;
    this.messagesEl.replaceChildren(...nodes);
    this.root.classList.toggle("is-empty", empty && this.convId === null);
    this.updateComposer();
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
      else content.innerHTML = renderMarkdown(m.content); // the one sanitizer
      node.rendered.content = m.content;
    }
    if (m.role !== "assistant") return;
    const thinking = node.querySelector(".thinking");
    const reasoning = m.reasoning || "";
    if (node.rendered.reasoning !== reasoning) {
      thinking.querySelector(".thinking-text").textContent = reasoning;
      node.rendered.reasoning = reasoning;
    }
    thinking.hidden = !reasoning;
    const thinkingNow = active && reasoning && !m.content;
    thinking.querySelector(".thinking-label").textContent = thinkingNow ? gettext("Thinking…") : gettext("Reasoning");
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
  }

  renderFoot(m, node) {
    const slot = node.threadSlot || { versions: [m], index: 0, head: m };
    const streamingHere = this.isStreaming();
    const isLastUser = m.role === "user" && slot.head.id === this.lastUserId && slot.index === slot.versions.length - 1;
    const isLastAssistant =
      m.role === "assistant" && slot.head.id === this.lastAssistantId && slot.index === slot.versions.length - 1;
    const key = JSON.stringify([
      m.status, m.cost, m.usage, m.error, m.model, slot.index, slot.versions.length, isLastUser, isLastAssistant,
      streamingHere, typeof m.id,
    ]);
    if (node.rendered.footKey === key) return;
    node.rendered.footKey = key;
    const foot = node.querySelector(".msg-foot");
    const parts = [];
    if (slot.versions.length > 1) {
      parts.push(
        el(
          "span.versions",
          { "aria-label": gettext("Versions") },
          iconButton("chevron-left", gettext("Previous version"), () => this.showVersion(slot, -1)),
          el("span.version-count", { text: slot.index + 1 + " / " + slot.versions.length }),
          iconButton("chevron-right", gettext("Next version"), () => this.showVersion(slot, 1)),
        ),
      );
      parts[0].querySelectorAll("button")[0].disabled = slot.index === 0;
      parts[0].querySelectorAll("button")[1].disabled = slot.index === slot.versions.length - 1;
    }
    if (m.role === "assistant") {
      const badge = this.statusBadge(m);
      if (badge) parts.push(badge);
    }
    const actions = el("span.msg-actions");
    if (typeof m.id === "number" && m.content) {
      actions.append(iconButton("copy", gettext("Copy"), () => copyText(m.content)));
    }
    if (isLastUser && !streamingHere && typeof m.id === "number") {
      actions.append(iconButton("edit", gettext("Edit"), () => this.startEdit(m, node)));
    }
    if (isLastAssistant && !ACTIVE.has(m.status)) {
      actions.append(iconButton("refresh", gettext("Regenerate"), () => this.regenerate()));
    }
    const u = m.usage || {};
    if (m.role === "assistant" && !ACTIVE.has(m.status) && (u.total_tokens > 0 || Number(m.cost) > 0)) {
      const tip = [
        interpolate(gettext("Model: %s"), [m.model || "—"]),
        interpolate(gettext("Tokens: %(prompt)s in, %(completion)s out, %(total)s total"), {
          prompt: u.prompt_tokens ?? 0, completion: u.completion_tokens ?? 0, total: u.total_tokens ?? 0,
        }, true),
        u.cached_tokens ? interpolate(gettext("Cached: %s"), [u.cached_tokens]) : null,
        u.estimated ? gettext("(estimated)") : null,
        interpolate(gettext("Cost: %s credits"), [m.cost ?? "0"]),
        m.completed_at ? formatDateTime(m.completed_at) : null,
      ].filter(Boolean).join("\n");
      actions.append(
        el("span.usage", { tabindex: "0", "data-tip": tip, "aria-label": tip }, icon("info"),
          el("span.usage-short", { text: (u.total_tokens ?? 0) + " " + gettext("tokens") })),
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

  showVersion(slot, delta) {
    const index = Math.max(0, Math.min(slot.versions.length - 1, slot.index + delta));
    this.versionView.set(slot.head.id, slot.versions[index].id);
    this.renderThread();
  }

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
  }

  nearBottom() {
    return this.thread.scrollHeight - this.thread.scrollTop - this.thread.clientHeight < STICK_PX;
  }

  scrollToBottom() {
    this.thread.scrollTop = this.thread.scrollHeight;
  }

  isStreaming() {
    for (const m of this.messages.values()) if (ACTIVE.has(m.status) && m.role === "assistant") return true;
    return false;
  }

  sendPending() {
    for (const p of this.pending.values()) if (p.convId === this.convId) return true;
    return false;
  }

  // --- frames from the server -------------------------------------------------------------------------------
  onSocketStatus({ state }) {
    $("banner").hidden = state !== "reconnecting";
    if (state === "unauthenticated") window.location.assign("/accounts/login/?next=" + encodeURIComponent(location.pathname));
    this.root.classList.toggle("offline", state === "reconnecting");
  }

  onFrame(frame) {
    switch (frame.type) {
      case "conversation":
        return this.onConversationFrame(frame.conversation);
      case "message":
        return this.onMessageFrame(frame.message);
      case "delta":
        return this.onDelta(frame);
      case "done":
        return this.onDone(frame);
      case "error":
        return this.onError(frame);
      default:
        return undefined;
    }
  }

  onConversationFrame(conv) {
    if (!conv) return;
    this.sidebar.upsert(conv);
    if (conv.id === this.convId) this.applyConversation(conv);
  }

  onMessageFrame(m) {
    if (!m) return;
    const pending = m.client_msg_id ? this.pending.get(m.client_msg_id) : null;
    if (pending) {
      this.pending.delete(m.client_msg_id);
      if (pending.localId) {
        this.messages.delete(pending.localId);
        this.elements.delete(pending.localId);
      }
      if (pending.convId === null && this.convId === null && pending.openedFrom === this.loadToken) {
        this.adoptNewConversation(m.conversation_id);
      }
    }
    if (m.conversation_id !== this.convId) {
      this.sidebar.touch(m.conversation_id);
      return;
    }
    this.resyncing = false;
    const isNew = !this.messages.has(m.id);
    if (isNew) this.applyOp(m);
    this.upsertMessage(m, { render: !isNew });
    if (isNew) {
      const stick = this.nearBottom() || m.role === "user";
      this.renderThread();
      if (stick) this.scrollToBottom();
    } else if (pending) {
      this.renderThread();
    }
  }

  /** A new message answering our edit/regenerate: the one it replaces becomes its earlier version. */
  applyOp(m) {
    const op = this.ops.get(m.conversation_id);
    if (!op) return;
    if (op.kind === "edit" && m.role === "user" && op.oldUserId && !op.userDone) {
      const old = this.messages.get(op.oldUserId);
      if (old && !old.superseded_by) old.superseded_by = m.id;
      op.userDone = true;
    } else if (m.role === "assistant" && !op.assistantDone) {
      const old = op.oldAssistantId ? this.messages.get(op.oldAssistantId) : null;
      if (old && !old.superseded_by) old.superseded_by = m.id;
      op.assistantDone = true;
      // The new answer exists: the server took the frame, whichever message carries its client_msg_id.
      this.pending.delete(op.clientMsgId);
      this.socket.forget(op.clientMsgId);
    }
  }

  adoptNewConversation(id) {
    this.convId = id;
    this.socket.subscribed = id; // the server subscribed this socket when it created the conversation
    history.replaceState({}, "", "/c/" + id + "/");
    this.sidebar.setActive(id);
    this.conv = this.sidebar.conversations.get(id) || this.conv || { id, title: "", model: this.currentModel() };
    if (this.draftModel) this.conv.model = this.draftModel;
    this.draftModel = null;
    for (const m of this.messages.values()) m.conversation_id = id;
    this.renderHeader();
  }

  onDelta(frame) {
    if (frame.conversation_id !== this.convId) return;
    let m = this.messages.get(frame.message_id);
    if (!m) {
      if (frame.seq !== 1) {
        this.resync();
        return;
      }
      m = {
        id: frame.message_id, conversation_id: frame.conversation_id, role: "assistant", content: "", reasoning: "",
        status: "streaming", seq: 0, superseded_by: null,
      };
      this.applyOp(m);
      this.messages.set(m.id, m);
      this.renderThread();
    }
    const last = m.seq || 0;
    if (frame.seq <= last) return; // already in the snapshot
    if (frame.seq !== last + 1) {
      this.resync();
      return;
    }
    m.seq = frame.seq;
    if (frame.content) m.content = (m.content || "") + frame.content;
    if (frame.reasoning) m.reasoning = (m.reasoning || "") + frame.reasoning;
    if (m.status === "pending") {
      m.status = "streaming";
      this.updateComposer();
      this.updateMessageEl(m);
    }
    this.scheduleRender(m);
  }

  resync() {
    if (this.resyncing) return;
    this.resyncing = true;
    this.socket.resync();
    setTimeout(() => {
      this.resyncing = false;
    }, 2000);
  }

  onDone(frame) {
    if (frame.balance !== undefined && frame.balance !== null) this.setBalance(frame.balance);
    if (frame.conversation_id !== this.convId) {
      this.sidebar.touch(frame.conversation_id);
      return;
    }
    const existing = this.messages.get(frame.message_id);
    const final = frame.message || {
      ...(existing || {}),
      id: frame.message_id,
      status: frame.status,
      finish_reason: frame.finish_reason,
      usage: frame.usage,
      cost: frame.cost,
      error: frame.error,
    };
    if (existing && existing.superseded_by && !final.superseded_by) final.superseded_by = existing.superseded_by;
    this.messages.set(final.id, final);
    this.dirty.delete(final.id);
    const stick = this.nearBottom();
    if (!existing) this.renderThread();
    else {
      this.updateMessageEl(final);
      this.renderThread(); // footers of the last turn change (regenerate / edit buttons)
    }
    if (stick) this.scrollToBottom();
    const op = this.ops.get(this.convId);
    if (op && op.assistantDone) {
      this.ops.delete(this.convId);
      this.pending.delete(op.clientMsgId);
      this.socket.forget(op.clientMsgId);
      this.refreshVersions();
    }
    if (final.status === "error" && frame.error && frame.error.message) {
      // The message shows the reason; nothing else to do.
    }
  }

  /** After an edit/regenerate, read the thread again so every version is exactly what the server kept. */
  async refreshVersions() {
    const id = this.convId;
    const token = this.loadToken;
    try {
      const data = await api(urls.conversation(id) + "?versions=1&limit=100");
      if (token !== this.loadToken) return;
      for (const m of data.messages) {
        const local = this.messages.get(m.id);
        if (local && ACTIVE.has(local.status) && !ACTIVE.has(m.status)) continue;
        this.messages.set(m.id, m);
      }
      this.renderThread();
    } catch {
      // The thread as shown is still right apart from versions; the next load will fix it.
    }
  }

  onError(frame) {
    const text = errorText(frame.code, frame.message, frame);
    let pendingEntry = null;
    if (!frame.message_id) {
      // A refusal stores nothing: it answers our oldest unacknowledged frame for that conversation.
      for (const [id, p] of this.pending) {
        if (p.convId === (frame.conversation_id ?? null) || frame.conversation_id === undefined) {
          pendingEntry = [id, p];
          break;
        }
      }
      if (!pendingEntry && this.pending.size) pendingEntry = [...this.pending.entries()][0];
    }
    if (pendingEntry) {
      const [clientMsgId, p] = pendingEntry;
      this.pending.delete(clientMsgId);
      this.socket.forget(clientMsgId);
      this.ops.delete(p.convId);
      if (p.localId) {
        this.messages.delete(p.localId);
        this.elements.delete(p.localId);
        this.renderThread();
      }
      if (p.kind === "send" && p.convId === this.convId && !this.prompt.value.trim()) {
        this.prompt.value = p.content;
        this.autosize();
      }
      const retry = frame.retryable && p.kind === "send"
        ? { label: gettext("Retry"), run: () => this.sendText(p.content, p.convId) }
        : null;
      toast(text, { kind: "error", action: retry, timeout: retry ? 10000 : 7000 });
      this.updateComposer();
      return;
    }
    if (frame.message_id && this.messages.has(frame.message_id)) {
      const m = this.messages.get(frame.message_id);
      if (ACTIVE.has(m.status)) return; // the done frame follows with the stored status
    }
    toast(text, { kind: "error" });
  }

  // --- composer ---------------------------------------------------------------------------------------------
  bindComposer() {
    this.prompt.addEventListener("input", () => {
      this.autosize();
      this.updateComposer();
    });
    this.prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        this.submit();
      }
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.stopButton.addEventListener("click", () => this.stop());
    this.modelPicker.addEventListener("change", async () => {
      const model = this.modelPicker.value;
      if (this.convId && this.conv) {
        try {
          await this.patchConversation(this.convId, { model });
        } catch (err) {
          toast(err.message, { kind: "error" });
          this.renderModelPicker();
        }
      } else {
        this.draftModel = model;
      }
    });
    this.messagesEl.addEventListener("click", (e) => {
      const button = e.target.closest(".copy-code");
      if (!button) return;
      const code = button.closest(".codeblock").querySelector("code");
      copyText(code.textContent);
    });
  }

  autosize() {
    this.prompt.style.height = "auto";
    this.prompt.style.height = Math.min(this.prompt.scrollHeight, 240) + "px";
  }

  updateComposer() {
    const streaming = this.isStreaming();
    const pending = this.sendPending();
    this.stopButton.hidden = !streaming;
    this.sendButton.hidden = streaming;
    this.sendButton.disabled = pending || !this.prompt.value.trim();
    this.root.classList.toggle("send-pending", pending);
  }

  submit() {
    if (!this.ready) {
      // Sent before the page finished opening its chat: opening it would drop the message from view. Send it then.
      this.submitWhenReady = true;
      return;
    }
    if (this.isStreaming() || this.sendPending()) return;
    const text = this.prompt.value;
    if (!text.trim()) return;
    this.prompt.value = "";
    this.autosize();
    this.sendText(text, this.convId);
  }

  sendText(text, convId) {
    if (convId !== this.convId) return;
    const clientMsgId = crypto.randomUUID();
    const localId = "local-" + clientMsgId;
    this.localOrder = (this.localOrder || 0) + 1;
    this.messages.set(localId, {
      id: localId, localOrder: this.localOrder, conversation_id: convId, role: "user", content: text,
      status: "pending", superseded_by: null,
    });
    this.pending.set(clientMsgId, { kind: "send", convId, content: text, localId, openedFrom: this.loadToken });
    const frame = { type: "send", conversation_id: convId, content: text, client_msg_id: clientMsgId };
    const model = this.currentModel();
    if (model) frame.model = model;
    if (!convId && this.draft) {
      frame.conversation = this.draft;
      this.draft = null;
    }
    this.socket.send(frame);
    if (convId) this.sidebar.touch(convId);
    this.renderThread();
    this.scrollToBottom();
  }

  stop() {
    if (!this.convId || !this.isStreaming()) return;
    this.socket.send({ type: "stop", conversation_id: this.convId });
  }

  regenerate() {
    if (!this.convId || this.isStreaming()) return;
    const clientMsgId = crypto.randomUUID();
    this.ops.set(this.convId, { kind: "regenerate", oldAssistantId: this.lastAssistantId, clientMsgId });
    this.pending.set(clientMsgId, { kind: "regenerate", convId: this.convId, content: "" });
    const frame = { type: "regenerate", conversation_id: this.convId, client_msg_id: clientMsgId };
    const model = this.currentModel();
    if (model) frame.model = model;
    this.socket.send(frame);
    this.updateComposer();
  }

  startEdit(m, node) {
    const body = node.querySelector(".msg-body");
    const content = body.querySelector(".msg-content");
    const area = el("textarea.edit-area", { rows: "3", "aria-label": gettext("Edit message") });
    area.value = m.content;
    const cancel = () => {
      form.remove();
      content.hidden = false;
    };
    const save = () => {
      const text = area.value;
      if (!text.trim()) return;
      form.remove();
      content.hidden = false;
      this.sendEdit(m, text);
    };
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        save();
      } else if (e.key === "Escape") {
        e.stopPropagation();
        cancel();
      }
    });
    const form = el(
      "div.edit-box",
      {},
      area,
      el(
        "div.edit-actions",
        {},
        el("button.btn.ghost.small", { type: "button", text: gettext("Cancel"), on: { click: cancel } }),
        el("button.btn.primary.small", { type: "button", text: gettext("Send"), on: { click: save } }),
      ),
    );
    content.hidden = true;
    body.append(form);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  sendEdit(m, text) {
    const clientMsgId = crypto.randomUUID();
    const following = this.currentThread().find((s) => s.head.role === "assistant" && s.head.id > m.id);
    this.ops.set(this.convId, {
      kind: "edit", oldUserId: m.id, oldAssistantId: following ? following.head.id : null, clientMsgId,
    });
    this.pending.set(clientMsgId, { kind: "edit", convId: this.convId, content: text });
    this.socket.send({
      type: "edit", conversation_id: this.convId, message_id: m.id, content: text, client_msg_id: clientMsgId,
    });
    this.updateComposer();
  }

  // --- settings dialog --------------------------------------------------------------------------------------
  openSettings() {
    const dialog = $("settings-dialog");
    const form = $("settings-form");
    const model = this.currentModel();
    const caps = this.capabilities(model);
    const source = this.conv || this.draft || {};
    const settings = source.settings || {};
    $("settings-model").textContent = model || "—";
    $("settings-new-note").hidden = Boolean(this.convId);
    form.elements.system_prompt.value = source.system_prompt || "";

    this.setupRange("temperature", caps.temperature, settings.temperature, settings.thinking);
    this.setupRange("top_p", caps.top_p, settings.top_p, settings.thinking);
    form.elements.max_tokens.value = settings.max_tokens ?? "";
    if (caps.context_window) form.elements.max_tokens.max = String(caps.context_window);

    $("row-json_mode").hidden = caps.json_mode === false;
    form.elements.json_mode.checked = Boolean(settings.json_mode);

    const thinking = caps.thinking || "none";
    $("row-thinking").hidden = thinking !== "toggle";
    $("note-thinking-always").hidden = thinking !== "always";
    form.elements.thinking.value = settings.thinking === true ? "on" : settings.thinking === false ? "off" : "";
    $("settings-error").textContent = "";
    dialog.showModal();
  }

  setupRange(name, cap, value, thinking) {
    const row = $("row-" + name);
    const input = $("settings-form").elements[name];
    const note = row.querySelector("[data-fixed]");
    if (cap && cap.fixed !== undefined) {
      input.hidden = true;
      note.hidden = false;
      const fixed = thinking === false && cap.fixed_without_thinking !== undefined ? cap.fixed_without_thinking : cap.fixed;
      note.textContent = interpolate(gettext("Fixed by this model: %s"), [fixed]);
      input.value = "";
      row.dataset.fixed = "1";
    } else {
      input.hidden = false;
      note.hidden = true;
      row.dataset.fixed = "";
      if (cap && cap.min !== undefined) input.min = String(cap.min);
      if (cap && cap.max !== undefined) input.max = String(cap.max);
      input.value = value ?? "";
    }
  }

  async saveSettings() {
    const form = $("settings-form");
    const number = (name) => {
      const row = $("row-" + name);
      if (row && row.dataset.fixed) return null;
      const raw = form.elements[name].value.trim();
      return raw === "" ? null : Number(raw);
    };
    const caps = this.capabilities(this.currentModel());
    const settings = {
      temperature: number("temperature"),
      top_p: number("top_p"),
      max_tokens: number("max_tokens"),
      json_mode: form.elements.json_mode.checked,
      thinking: caps.thinking === "toggle"
        ? { on: true, off: false }[form.elements.thinking.value] ?? null
        : ((this.conv || this.draft || {}).settings || {}).thinking ?? null,
    };
    if (!this.convId) {
      // No conversation yet: keep the choice and send it with the first message (the server validates it then).
      this.draft = { system_prompt: form.elements.system_prompt.value, settings };
      $("settings-dialog").close();
      toast(gettext("Settings will apply to this new chat."));
      return;
    }
    try {
      await this.patchConversation(this.convId, { system_prompt: form.elements.system_prompt.value, settings });
      $("settings-dialog").close();
      toast(gettext("Settings saved."));
    } catch (err) {
      $("settings-error").textContent = err.message;
    }
  }

  // --- page chrome and keys -------------------------------------------------------------------------------
  bindChrome() {
    $("new-chat").addEventListener("click", () => this.newChat());
    $("toggle-sidebar").addEventListener("click", () => this.toggleSidebar());
    $("close-sidebar").addEventListener("click", () => this.closeSidebar());
    $("scrim").addEventListener("click", () => this.closeSidebar());
    $("open-settings").addEventListener("click", () => this.openSettings());
    $("settings-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.saveSettings();
    });
    $("settings-cancel").addEventListener("click", () => $("settings-dialog").close());
    const language = $("language-select");
    if (language) language.addEventListener("change", () => language.form.submit());
    for (const dialog of document.querySelectorAll("dialog")) {
      dialog.addEventListener("click", (e) => {
        if (e.target === dialog) dialog.close(); // a click on the backdrop
      });
    }
    document.addEventListener("click", (e) => {
      const menu = $("user-menu");
      if (menu.open && !menu.contains(e.target)) menu.open = false;
    });
  }

  bindKeys() {
    document.addEventListener("keydown", (e) => {
      const mod = e.ctrlKey || e.metaKey;
      if (mod && !e.shiftKey && e.key.toLowerCase() === "k") {
        e.preventDefault();
        this.sidebar.focusSearch();
      } else if (mod && e.shiftKey && e.key.toLowerCase() === "o") {
        e.preventDefault();
        this.newChat();
      } else if (e.key === "Escape" && !document.querySelector("dialog[open]") && this.isStreaming()) {
        e.preventDefault();
        this.stop();
      }
    });
  }

  newChat() {
    this.openConversation(null);
    this.prompt.focus();
  }

  openSidebar() {
    this.root.classList.add("sidebar-open");
    $("scrim").hidden = !window.matchMedia("(max-width: 799px)").matches;
  }

  closeSidebar() {
    this.root.classList.remove("sidebar-open");
    $("scrim").hidden = true;
  }

  toggleSidebar() {
    if (this.root.classList.contains("sidebar-open")) this.closeSidebar();
    else this.openSidebar();
  }
}

const root = document.getElementById("app");
if (root) new ChatApp(root).start();
