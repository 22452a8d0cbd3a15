// The conversation list: pinned first, then Today / Yesterday / Previous 7 days / Previous 30 days / by month,
// loaded a page at a time (cursor pagination) as the list scrolls; the Archived view; search; and each conversation's menu.
import { api, urls } from "./api.js";
import { sanitizeSnippet } from "./markdown.js";
import { dropOutOfProject, dragChat } from "./projects.js";
import { confirmDialog, copyText, dateGroup, debounce, el, formatDateTime, groupLabel, icon, toast } from "./ui.js";

const PAGE_SIZE = 30;

export class Sidebar {
  constructor(app) {
    this.app = app;
    this.list = document.getElementById("conv-list");
    this.results = document.getElementById("search-results");
    this.sentinel = document.getElementById("conv-sentinel");
    this.searchInput = document.getElementById("search");
    this.archivedButton = document.getElementById("show-archived");
    this.viewTitle = document.getElementById("sidebar-view-title");
    this.menu = document.getElementById("conv-menu");
    this.conversations = new Map(); // id -> conversation dict
    this.archived = false;
    this.next = null; // cursor of the next unpinned page; null when all are loaded
    this.loading = false;
    this.loadedOnce = false;
    this.activeId = null;
    this.generation = 0; // bumps on every reload so late pages of an old view are dropped
    this.menuFor = null;
    this.searchProject = null; // search within this project (its menu's "Search in project")
    this.scopeEl = document.getElementById("search-scope");
    this.scopeEl.querySelector("[data-clear]").addEventListener("click", () => this.setSearchProject(null));
    dropOutOfProject(this.list, app); // a chat dragged from a project onto the list leaves the project

    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }, { root: document.getElementById("conv-nav"), rootMargin: "200px" });
    this.observer.observe(this.sentinel);

    this.searchInput.addEventListener("input", debounce(() => this.search(this.searchInput.value), 250));
    this.searchInput.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        this.searchInput.value = "";
        this.search("");
        this.searchInput.blur();
      }
    });
    this.archivedButton.addEventListener("click", () => this.setArchived(!this.archived));
    this.buildMenu();
  }

  // --- loading ----------------------------------------------------------------------------------------------
  /** The main list holds the chats out of any project (a project's chats are under it); Archived holds all. */
  listParams() {
    return this.archived ? { archived: 1, limit: PAGE_SIZE } : { pinned: 0, limit: PAGE_SIZE, project: "none" };
  }

  async reload() {
    const generation = ++this.generation;
    this.app.projects.reload();
    this.conversations.clear();
    this.next = null;
    this.loading = true;
    this.list.replaceChildren(el("div.sidebar-note", { text: gettext("Loading…") }));
    try {
      if (!this.archived) {
        // Pinned ones are few: all of them first, so they always head the list.
        let cursor = null;
        do {
          const params = { pinned: 1, limit: 100, project: "none" };
          if (cursor) params.cursor = cursor;
          const page = await api(urls.conversations(params));
          if (generation !== this.generation) return;
          page.results.forEach((c) => this.conversations.set(c.id, c));
          cursor = page.next;
        } while (cursor);
      }
      const params = this.listParams();
      const page = await api(urls.conversations(params));
      if (generation !== this.generation) return;
      page.results.forEach((c) => this.conversations.set(c.id, c));
      this.next = page.next;
    } catch (err) {
      if (generation === this.generation) {
        this.list.replaceChildren(el("div.sidebar-note.error", { text: err.message }));
        this.loading = false;
      }
      return;
    }
    this.loading = false;
    this.loadedOnce = true;
    this.render();
    this.maybeLoadMore();
  }

  async loadMore() {
    if (this.loading || !this.next || !this.loadedOnce) return;
    const generation = this.generation;
    this.loading = true;
    const params = this.listParams();
    params.cursor = this.next;
    try {
      const page = await api(urls.conversations(params));
      if (generation !== this.generation) return;
      page.results.forEach((c) => this.conversations.set(c.id, c));
      this.next = page.next;
    } catch (err) {
      toast(err.message, { kind: "error" });
    } finally {
      if (generation === this.generation) this.loading = false;
    }
    this.render();
    this.maybeLoadMore();
  }

  /** The sentinel may still be on screen after a short page: keep loading until it is not. */
  maybeLoadMore() {
    if (!this.next) return;
    const nav = document.getElementById("conv-nav");
    const box = this.sentinel.getBoundingClientRect();
    const navBox = nav.getBoundingClientRect();
    if (box.top < navBox.bottom + 200) this.loadMore();
  }

  setArchived(archived) {
    this.archived = archived;
    this.archivedButton.classList.toggle("active", archived);
    this.archivedButton.setAttribute("aria-pressed", String(archived));
    this.viewTitle.textContent = archived ? gettext("Archived chats") : "";
    this.viewTitle.hidden = !archived;
    this.reload();
  }

  // --- updates from the app -----------------------------------------------------------------------------------
  upsert(conversation) {
    if (conversation.temporary) return; // a temporary chat is never in history
    this.app.projects.upsertChat(conversation);
    if (Boolean(conversation.archived) !== this.archived || (conversation.project && !this.archived)) {
      this.conversations.delete(conversation.id);
    } else {
      this.conversations.set(conversation.id, { ...this.conversations.get(conversation.id), ...conversation });
    }
    this.render();
  }

  /** A chat of the main list or of an open project. */
  find(id) {
    return this.conversations.get(id) || this.app.projects.chat(id);
  }

  remove(id) {
    this.app.projects.removeChat(id);
    this.conversations.delete(id);
    this.render();
  }

  /** A send moved the conversation to the top. */
  touch(id) {
    const c = this.conversations.get(id);
    if (!c) return;
    c.updated_at = new Date().toISOString();
    this.render();
  }

  setActive(id) {
    this.activeId = id;
    for (const item of document.querySelectorAll("#conv-nav .conv-item[data-id]")) {
      const active = Number(item.dataset.id) === id;
      item.classList.toggle("active", active);
      if (active) item.setAttribute("aria-current", "page");
      else item.removeAttribute("aria-current");
    }
  }

  // --- rendering ------------------------------------------------------------------------------------------
  render() {
    const all = [...this.conversations.values()].sort(
      (a, b) => (b.updated_at > a.updated_at ? 1 : b.updated_at < a.updated_at ? -1 : b.id - a.id),
    );
    const groups = new Map();
    for (const c of all) {
      const group = this.archived ? "archived" : c.pinned ? "pinned" : dateGroup(c.updated_at);
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(c);
    }
    const fragment = document.createDocumentFragment();
    // Pinned first, then by recency: today … previous 30 days, then one group per month, newest first.
    for (const group of ["pinned", ...[...groups.keys()].filter((g) => g !== "pinned")]) {
      const items = groups.get(group);
      if (!items) continue;
      const section = el("section.conv-group", { "aria-label": groupLabel(group) });
      if (group !== "archived") section.append(el("h2.conv-group-title", { text: groupLabel(group) }));
      const ul = el("ul.conv-ul");
      for (const c of items) ul.append(this.renderItem(c));
      section.append(ul);
      fragment.append(section);
    }
    if (!all.length) {
      fragment.append(
        el("div.sidebar-note", { text: this.archived ? gettext("No archived chats.") : gettext("No chats yet.") }),
      );
    }
    if (this.next) fragment.append(el("div.sidebar-note", { text: gettext("Loading…") }));
    this.list.replaceChildren(fragment);
  }

  renderItem(c) {
    const title = c.title || gettext("New chat");
    const link = el(
      "a.conv-link",
      {
        href: "/c/" + c.id + "/",
        title,
        on: {
          click: (e) => {
            if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
            e.preventDefault();
            this.app.openConversation(c.id);
          },
        },
      },
      c.pinned && !this.archived ? icon("pin") : null,
      el("span.conv-title", { text: title }),
    );
    const more = el(
      "button.icon-btn.conv-more",
      {
        type: "button",
        title: gettext("More"),
        "aria-label": interpolate(gettext("Options for %s"), [title]),
        "aria-haspopup": "menu",
        on: { click: (e) => this.openMenu(c.id, e.currentTarget) },
      },
      icon("more"),
    );
    const li = el("li.conv-item", { dataset: { id: String(c.id) } }, link, more);
    dragChat(li, c.id); // onto a project in the sidebar (or "Move to project" in the menu)
    if (c.id === this.activeId) {
      li.classList.add("active");
      li.setAttribute("aria-current", "page");
    }
    return li;
  }

  // --- the per-conversation menu --------------------------------------------------------------------------
  buildMenu() {
    const item = (action, iconName, label, extra = "") =>
      el(
        "button.menu-item" + extra,
        { type: "button", role: "menuitem", dataset: { action }, on: { click: () => this.runMenu(action) } },
        icon(iconName),
        el("span", { text: label }),
      );
    this.convMenuItems = [
      item("rename", "edit", gettext("Rename")),
      item("title", "spark", gettext("Write a new title")),
      item("pin", "pin", gettext("Pin")),
      item("move", "folder", gettext("Move to project…")),
      item("archive", "archive", gettext("Archive")),
      item("share", "share", gettext("Share link")),
      item("export-md", "download", gettext("Export as Markdown")),
      item("export-json", "download", gettext("Export as JSON")),
      el("hr"),
      item("delete", "trash", gettext("Delete"), ".danger"),
    ];
    this.menu.replaceChildren(...this.convMenuItems);
    document.addEventListener("click", (e) => {
      if (this.menu.hidden) return;
      if (this.menu.contains(e.target) || (e.target.closest && e.target.closest(".conv-more"))) return;
      this.closeMenu();
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !this.menu.hidden) {
        e.stopPropagation();
        this.closeMenu();
      }
    }, true);
  }

  openMenu(id, anchor) {
    if (this.menuFor === id && !this.menu.hidden) {
      this.closeMenu();
      return;
    }
    const c = this.find(id);
    if (!c) return;
    if (this.menuIsProject) {
      this.menu.replaceChildren(...this.convMenuItems); // the menu showed a project's items
      this.menuIsProject = false;
    }
    this.menuFor = id;
    this.menu.querySelector('[data-action="pin"] span').textContent = c.pinned ? gettext("Unpin") : gettext("Pin");
    this.menu.querySelector('[data-action="pin"]').hidden = this.archived;
    this.menu.querySelector('[data-action="archive"] span').textContent = c.archived
      ? gettext("Unarchive")
      : gettext("Archive");
    this.menu.hidden = false;
    const box = anchor.getBoundingClientRect();
    const menuBox = this.menu.getBoundingClientRect();
    const top = Math.min(box.bottom + 4, window.innerHeight - menuBox.height - 8);
    this.menu.style.top = Math.max(8, top) + "px";
    this.menu.style.left = Math.max(8, Math.min(box.right - menuBox.width, window.innerWidth - menuBox.width - 8)) + "px";
    this.menu.querySelector(".menu-item").focus();
  }

  closeMenu() {
    this.menu.hidden = true;
    this.menuFor = null;
  }

  async runMenu(action) {
    const id = this.menuFor;
    this.closeMenu();
    const c = this.find(id);
    if (!c) return;
    try {
      if (action === "rename") this.startRename(id);
      else if (action === "move") this.app.projects.moveDialog.open(c);
      else if (action === "title") await this.app.regenerateTitle(id);
      else if (action === "pin") await this.app.patchConversation(id, { pinned: !c.pinned });
      else if (action === "archive") {
        await this.app.patchConversation(id, { archived: !c.archived });
        toast(c.archived ? gettext("Chat restored from the archive.") : gettext("Chat archived."));
      } else if (action === "share") this.app.shares.open(id, c.title);
      else if (action === "export-md") download(urls.exportMd(id));
      else if (action === "export-json") download(urls.exportJson(id));
      else if (action === "delete") await this.deleteConversation(c);
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  }

  startRename(id) {
    const item = document.querySelector('#conv-nav .conv-item[data-id="' + id + '"]');
    const c = this.find(id);
    if (!item || !c) return;
    const input = el("input.rename-input", {
      type: "text",
      maxlength: "200",
      "aria-label": gettext("Chat title"),
    });
    input.value = c.title;
    const link = item.querySelector(".conv-link");
    link.hidden = true;
    item.prepend(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      input.remove();
      link.hidden = false;
      if (save && title && title !== c.title) {
        try {
          await this.app.patchConversation(id, { title });
        } catch (err) {
          toast(err.message, { kind: "error" });
        }
      }
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        finish(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  async deleteConversation(c) {
    const ok = await confirmDialog({
      title: gettext("Delete chat?"),
      body: interpolate(gettext("“%s” and all its messages will be deleted. This cannot be undone."), [
        c.title || gettext("New chat"),
      ]),
      confirmLabel: gettext("Delete"),
      danger: true,
    });
    if (!ok) return;
    await api(urls.conversation(c.id), { method: "DELETE" });
    this.remove(c.id);
    this.app.conversationDeleted(c.id);
    toast(gettext("Chat deleted."));
  }

  // --- search -----------------------------------------------------------------------------------------------
  async search(query) {
    const q = query.trim();
    this.searchToken = (this.searchToken || 0) + 1;
    const token = this.searchToken;
    if (!q) {
      this.results.hidden = true;
      this.results.replaceChildren();
      this.list.hidden = false;
      this.sentinel.hidden = false;
      return;
    }
    this.list.hidden = true;
    this.sentinel.hidden = true;
    this.results.hidden = false;
    this.results.replaceChildren(el("div.sidebar-note", { text: gettext("Searching…") }));
    let data;
    try {
      data = await api(urls.search(q) + (this.searchProject ? "&project=" + this.searchProject.id : ""));
    } catch (err) {
      if (token === this.searchToken) this.results.replaceChildren(el("div.sidebar-note.error", { text: err.message }));
      return;
    }
    if (token !== this.searchToken) return;
    const results = data.results || [];
    if (!results.length) {
      this.results.replaceChildren(el("div.sidebar-note", { text: gettext("No matches.") }));
      return;
    }
    const ul = el("ul.conv-ul.search-ul");
    // One result per chat (the server groups them): the title with its matches marked, then, when a message
    // matched, that message as plain text around the match. A title-only hit has no second line to repeat it.
    for (const r of results) {
      const title = el("span.search-title");
      if (r.conversation_title && r.title_html) title.innerHTML = sanitizeSnippet(r.title_html); // only <mark>
      else title.textContent = r.conversation_title || gettext("New chat");
      const snippet = el("span.search-snippet", { hidden: !r.message_id });
      if (r.message_id) snippet.innerHTML = sanitizeSnippet(r.snippet_html); // only <mark> survives
      ul.append(
        el(
          "li",
          {},
          el(
            "a.search-hit",
            {
              href: "/c/" + r.conversation_id + "/",
              on: {
                click: (e) => {
                  if (e.metaKey || e.ctrlKey || e.button !== 0) return;
                  e.preventDefault();
                  this.app.openConversation(r.conversation_id, { focusMessage: r.message_id });
                },
              },
            },
            title,
            snippet,
            el("span.search-when", { text: formatDateTime(r.updated_at) }),
          ),
        ),
      );
    }
    this.results.replaceChildren(
      el("h2.conv-group-title", { text: interpolate(gettext("Results for “%s”"), [q]) }),
      ul,
    );
  }

  /** Search within one project (null: all chats); a chip under the search box says so. */
  setSearchProject(project) {
    this.searchProject = project;
    this.scopeEl.hidden = !project;
    if (project) this.scopeEl.querySelector("[data-label]").textContent = interpolate(gettext("In %s"), [project.name]);
    this.searchInput.placeholder = project ? gettext("Search this project") : gettext("Search chats");
    this.search(this.searchInput.value);
    if (project) this.focusSearch();
  }

  // --- a project's menu -------------------------------------------------------------------------------------
  openProjectMenu(project, anchor) {
    const projects = this.app.projects;
    const visible = projects.visible();
    const at = visible.findIndex((p) => p.id === project.id);
    const run = (fn) => async () => {
      this.closeMenu();
      try {
        await fn();
      } catch (err) {
        toast(err.message, { kind: "error" });
      }
    };
    const item = (iconName, label, fn, extra = "") =>
      el("button.menu-item" + extra, { type: "button", role: "menuitem", on: { click: run(fn) } }, icon(iconName),
        el("span", { text: label }));
    this.menu.replaceChildren(
      item("edit", gettext("Edit project"), () => projects.dialog.open(project)),
      item("new", gettext("New chat in project"), () => this.app.newChatIn(project.id)),
      item("search", gettext("Search in project"), () => this.setSearchProject(project)),
      at > 0 ? item("arrow-up", gettext("Move up"), () => projects.step(project, -1)) : null,
      at < visible.length - 1 ? item("arrow-down", gettext("Move down"), () => projects.step(project, 1)) : null,
      item("archive", project.archived ? gettext("Unarchive") : gettext("Archive"), () =>
        projects.setArchived(project, !project.archived)),
      el("hr"),
      item("trash", gettext("Delete project…"), () => projects.remove(project), ".danger"),
    );
    this.menuIsProject = true;
    this.placeMenu(anchor);
  }

  placeMenu(anchor) {
    this.menu.hidden = false;
    const box = anchor.getBoundingClientRect();
    const menuBox = this.menu.getBoundingClientRect();
    const top = Math.min(box.bottom + 4, window.innerHeight - menuBox.height - 8);
    this.menu.style.top = Math.max(8, top) + "px";
    this.menu.style.left = Math.max(8, Math.min(box.right - menuBox.width, window.innerWidth - menuBox.width - 8)) + "px";
    this.menu.querySelector(".menu-item").focus();
  }

  focusSearch() {
    this.app.openSidebar();
    this.searchInput.focus();
    this.searchInput.select();
  }
}

export function download(url) {
  const a = el("a", { href: url, download: "" });
  document.body.append(a);
  a.click();
  a.remove();
}

/** Import / export all, in the sidebar footer. */
export function setupImportExport(app) {
  const input = document.getElementById("import-file");
  document.getElementById("import-button").addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    try {
      const data = await api(urls.importFile(), { method: "POST", form });
      const count = data.imported ?? (data.conversation_ids || []).length;
      toast(interpolate(ngettext("Imported %s chat.", "Imported %s chats.", count), [count]));
      await app.sidebar.reload();
      if (data.conversation_ids && data.conversation_ids.length) app.openConversation(data.conversation_ids[0]);
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  });
  document.getElementById("export-all").addEventListener("click", () => download(urls.exportAll()));
}

/** The share-link dialog: create, copy, revoke. */
export class ShareDialog {
  constructor() {
    this.dialog = document.getElementById("share-dialog");
    this.listEl = this.dialog.querySelector("[data-shares]");
    this.titleEl = this.dialog.querySelector("[data-title]");
    this.dialog.querySelector("[data-create]").addEventListener("click", () => this.create());
    this.conversationId = null;
  }

  async open(id, title) {
    this.conversationId = id;
    this.titleEl.textContent = title || gettext("New chat");
    this.listEl.replaceChildren(el("p.muted", { text: gettext("Loading…") }));
    this.dialog.showModal();
    await this.refresh();
  }

  async refresh() {
    let data;
    try {
      data = await api(urls.shares(this.conversationId));
    } catch (err) {
      this.listEl.replaceChildren(el("p.error-text", { text: err.message }));
      return;
    }
    const shares = Array.isArray(data) ? data : data.results || data.shares || [];
    if (!shares.length) {
      this.listEl.replaceChildren(el("p.muted", { text: gettext("No share links yet. Anyone with a link can read this chat.") }));
      return;
    }
    this.listEl.replaceChildren(
      ...shares.map((s) => {
        const url = new URL(s.url, window.location.origin).href;
        return el(
          "div.share-row",
          {},
          el("input.share-url", { type: "text", readonly: true, value: url, "aria-label": gettext("Share link") }),
          el("button.btn.small", { type: "button", text: gettext("Copy"), on: { click: () => copyText(url) } }),
          el("button.btn.small.danger", {
            type: "button",
            text: gettext("Revoke"),
            on: { click: () => this.revoke(s.token) },
          }),
        );
      }),
    );
  }

  async create() {
    try {
      const share = await api(urls.share(this.conversationId), { method: "POST", body: {} });
      await this.refresh();
      copyText(new URL(share.url, window.location.origin).href);
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  }

  async revoke(token) {
    try {
      await api(urls.revokeShare(token), { method: "DELETE" });
      toast(gettext("Share link revoked."));
      await this.refresh();
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  }
}
