// The chat page's entry point: the app object, its header, opening conversations, and the page chrome and keys.
import { ApiError, api, urls } from "./api.js";
import { Attachments } from "./attachments.js";
import { Composer } from "./composer.js";
import { Frames } from "./frames.js";
import { MessageList } from "./messages.js";
import { ModelPicker } from "./modelpicker.js";
import { Searches } from "./searches.js";
import { Settings } from "./settings.js";
import { ShareDialog, Sidebar, setupImportExport } from "./sidebar.js";
import { ChatSocket } from "./socket.js";
import { formatCredits } from "./texts.js";
import { $, el, toast } from "./ui.js";
import { Versions } from "./versions.js";

// Each concern adds its methods to this one object rather than holding state apart: they call one another freely,
// and sidebar.js, the browser tests and the console all reach the page through it (window.kimichat).
const Base = [MessageList, Versions, Frames, Composer, Attachments, Settings, ModelPicker, Searches].reduce(
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
    this.sidebar = new Sidebar(this);
    this.shares = new ShareDialog();
    window.kimichat = this; // handy in the console, and for the browser tests
  }

  async start() {
    this.bindComposer();
    this.bindModelPicker();
    this.bindAttachments();
    this.loadUnsentAttachments();
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
    const notice = $("credits-notice");
    notice.querySelector("[data-text]").textContent = text;
    notice.hidden = false;
    this.creditsNotice = { balance: Number(balance) || 0 };
  }

  hideCreditsNotice() {
    $("credits-notice").hidden = true;
    this.creditsNotice = null;
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

  // --- page chrome and keys -------------------------------------------------------------------------------
  bindChrome() {
    $("new-chat").addEventListener("click", () => this.newChat());
    $("toggle-sidebar").addEventListener("click", () => this.toggleSidebar());
    $("close-sidebar").addEventListener("click", () => this.closeSidebar());
    $("scrim").addEventListener("click", () => this.closeSidebar());
    $("open-settings").addEventListener("click", () => this.openSettings());
    $("credits-notice").querySelector("[data-recheck]").addEventListener("click", () => this.loadMe());
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

const root = document.getElementById("app");
if (root) new ChatApp(root).start();
