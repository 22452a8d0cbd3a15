// The chat page's entry point: the app object, its header, opening conversations, and the page chrome and keys.
import { ApiError, api, urls } from "./api.js";
import { Attachments } from "./attachments.js";
import { Composer } from "./composer.js";
import { Frames } from "./frames.js";
import { MessageList } from "./messages.js";
import { ModelPicker } from "./modelpicker.js";
import { Projects } from "./projects.js";
import { Searches } from "./searches.js";
import { Personal } from "./personal.js";
import { Settings } from "./settings.js";
import { ShareDialog, Sidebar, setupImportExport } from "./sidebar.js";
import { ChatSocket } from "./socket.js";
import { formatCredits } from "./texts.js";
import { $, el, toast } from "./ui.js";
import { Versions } from "./versions.js";

// Each concern adds its methods to this one object rather than holding state apart: they call one another freely,
// and sidebar.js, the browser tests and the console all reach the page through it (window.kimichat).
const Base = [MessageList, Versions, Frames, Composer, Attachments, Settings, ModelPicker, Searches, Personal].reduce(
  (base, mixin) => mixin(base),
  class {},
);

class ChatApp extends Base {
  constructor(root) {
    super();
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
    this.draftProject = null; // the project a chat that does not exist yet starts in (newChatIn)
    this.sidebar = new Sidebar(this);
    this.projects = new Projects(this);
    this.shares = new ShareDialog();
    window.kimichat = this; // handy in the console, and for the browser tests
  }

  async start() {
    this.bindComposer();
    this.bindModelPicker();
    this.bindAttachments();
    this.loadUnsentAttachments();
    this.bindChrome();
    this.bindPersonal();
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
    box.title = balance === null || balance === undefined ? "" : interpolate(gettext("%s credits left"), [formatCredits(balance)]);
    const known = balance !== null && balance !== undefined;
    if (known && Number(balance) <= 0) {
      this.showCreditsNotice(interpolate(gettext("You are out of credits (balance: %s)."), [formatCredits(balance)]));
    } else if (known && this.creditsNotice && Number(balance) > this.creditsNotice.balance) {
      this.hideCreditsNotice(); // credits were added since the notice
    }
  }

  /** Running out of credits stays on screen (not a passing toast) until credits are added or a send is accepted. */
  showCreditsNotice(text, balance = 0) {
    // An account waiting for approval gets its credits when approved: its own notice says why it cannot chat.
    if ($("approval-notice")) return;
    const notice = $("credits-notice");
    notice.querySelector("[data-text]").textContent = text;
    notice.hidden = false;
    this.creditsNotice = { balance: Number(balance) || 0 };
  }

  hideCreditsNotice() {
    $("credits-notice").hidden = true;
    this.creditsNotice = null;
  }

  /** A spending cap stays on screen (which cap, when it resets) until a send goes through or it is dismissed. */
  showBudgetNotice(text) {
    const notice = $("budget-notice");
    notice.querySelector("[data-text]").textContent = text;
    notice.hidden = false;
  }

  hideBudgetNotice() {
    $("budget-notice").hidden = true;
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

  // --- opening conversations --------------------------------------------------------------------------------
  async openConversation(id, { push = true, focusMessage = null } = {}) {
    this.leaveTemporary(id);
    const token = ++this.loadToken;
    this.convId = id;
    this.conv = null;
    this.draft = null; // settings chosen for a chat that does not exist yet: sent with its first message
    this.draftProject = null;
    this.presetId = null; // the preset those settings came from
    if (this.presets) this.renderPresets();
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
      this.temporaryDraft = false; // each new chat starts kept in history; the ghost button makes it temporary
      this.renderHeader();
      this.renderThread();
      this.updateComposer();
      this.prompt.focus();
      return;
    }
    this.messagesEl.replaceChildren(el("div.thread-loading", { text: gettext("Loading…") }));
    let data;
    try {
      data = await api(urls.conversation(id) + "?limit=100");
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
    // The branch shown only: messages that left it (an edit's old question) may be older than its loaded page.
    const ids = [...this.messages.values()].filter((m) => typeof m.id === "number" && !m.superseded_by).map((m) => m.id);
    if (!ids.length || !this.convId) return;
    const before = Math.min(...ids);
    const token = this.loadToken;
    const previousHeight = this.thread.scrollHeight;
    const data = await api(urls.conversation(this.convId) + "?limit=100&before=" + before);
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
    const temporary = this.conv ? Boolean(this.conv.temporary) : Boolean(this.temporaryDraft);
    const fallback = temporary ? gettext("Temporary chat") : gettext("New chat");
    const title = this.conv ? this.conv.title || fallback : fallback;
    this.titleEl.textContent = title;
    document.title = title + " · KimiChat";
    this.root.classList.toggle("temporary", temporary);
    $("temp-badge").hidden = !(this.conv && this.conv.temporary);
    const toggle = $("temp-toggle");
    toggle.hidden = this.convId !== null;
    toggle.setAttribute("aria-pressed", String(temporary));
    $("temp-note").hidden = !(temporary && this.convId === null);
    this.renderModelPicker();
    this.renderProjectHeader();
  }

  /** Above the title: the project this chat is in (or starts in), which opens the project's dialog. */
  renderProjectHeader() {
    const button = $("head-project");
    const id = this.conv ? this.conv.project : this.draftProject;
    const project = id && this.projects ? this.projects.byId(id) : null;
    button.hidden = !project;
    if (!project) return;
    button.textContent = (project.emoji ? project.emoji + " " : "") + project.name;
    button.title = gettext("Project settings");
  }

  /** A new chat that starts in a project: its first send files it there. */
  newChatIn(projectId) {
    this.openConversation(null);
    this.draftProject = projectId;
    this.renderProjectHeader();
    this.prompt.focus();
  }

  // --- temporary chats: kept out of history, deleted when left (docs/architecture.md) --------------------------
  toggleTemporary() {
    if (this.convId !== null) return;
    this.temporaryDraft = !this.temporaryDraft;
    this.renderHeader();
    this.prompt.focus();
  }

  /** Leaving a temporary chat in the page deletes it now; a closed or reloaded tab leaves it to the server's reaper
   * (a reload must find it again). A 409 (its answer still running) is left to the reaper too. */
  leaveTemporary(nextId) {
    if (!this.conv || !this.conv.temporary || this.conv.id === nextId) return;
    const id = this.conv.id;
    api(urls.conversation(id), { method: "DELETE" }).catch(() => {});
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

  // --- page chrome and keys -------------------------------------------------------------------------------
  bindChrome() {
    $("new-chat").addEventListener("click", () => this.newChat());
    $("toggle-sidebar").addEventListener("click", () => this.toggleSidebar());
    $("close-sidebar").addEventListener("click", () => this.closeSidebar());
    $("scrim").addEventListener("click", () => this.closeSidebar());
    $("open-settings").addEventListener("click", () => this.openSettings());
    $("credits-notice").querySelector("[data-recheck]").addEventListener("click", () => this.loadMe());
    $("budget-notice").querySelector("[data-dismiss]").addEventListener("click", () => this.hideBudgetNotice());
    $("temp-toggle").addEventListener("click", () => this.toggleTemporary());
    this.bindScrollButton();
    // A footnote's links move within the message: no navigation (a hash change would count as a history step).
    this.messagesEl.addEventListener("click", (e) => {
      const link = e.target.closest('a[href^="#"]');
      if (!link) return;
      e.preventDefault();
      const target = document.getElementById(link.getAttribute("href").slice(1));
      if (!target) return;
      target.scrollIntoView({ block: "center", behavior: "smooth" });
      target.classList.add("flash-hit");
      setTimeout(() => target.classList.remove("flash-hit"), 1500);
    });
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
      } else if (e.key === "?" && !mod && !e.altKey && !isTyping(e.target) && !document.querySelector("dialog[open]")) {
        e.preventDefault();
        $("keys-dialog").showModal();
      } else if (e.key === "Escape" && $("user-menu").open) {
        e.preventDefault();
        $("user-menu").open = false; // Esc closes the menu (and only the menu: it does not stop an answer)
        $("user-menu").querySelector("summary").focus();
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

/** Whether a key press goes into a text field (the composer, search, a rename, an edit): "?" is then just text. */
function isTyping(target) {
  if (!(target instanceof Element)) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable]:not([contenteditable='false'])"));
}

const root = document.getElementById("app");
if (root) new ChatApp(root).start();
