// Projects in the sidebar: the list (colour, emoji, name, chat count), each project's chats when it is open, a new
// chat in a project, the project dialog (name, emoji, colour, instructions, files), reordering (drag, or Move up /
// Move down in its menu), archive, delete with or without its chats; and filing a chat under a project, by dragging
// it onto one or with "Move to project" in the chat's menu (docs/projects.md).
import { api, urls } from "./api.js";
import { $, el, icon, toast } from "./ui.js";

const CHAT_TYPE = "application/x-kimichat-conversation";
const PROJECT_TYPE = "application/x-kimichat-project";
const OPEN_KEY = "kimichat.openProjects";

export const projectUrls = {
  list: () => "/api/projects/",
  one: (id) => "/api/projects/" + encodeURIComponent(id) + "/",
  reorder: () => "/api/projects/reorder/",
  files: (id) => "/api/projects/" + encodeURIComponent(id) + "/files/",
  file: (id, fileId) => "/api/projects/" + encodeURIComponent(id) + "/files/" + encodeURIComponent(fileId) + "/",
};

/** A chat being dragged: its id on the drag's data. */
export function dragChat(item, id) {
  item.draggable = true;
  item.addEventListener("dragstart", (e) => {
    e.dataTransfer.setData(CHAT_TYPE, String(id));
    e.dataTransfer.setData("text/plain", String(id));
    e.dataTransfer.effectAllowed = "move";
    item.classList.add("dragging");
  });
  item.addEventListener("dragend", () => item.classList.remove("dragging"));
}

function projectBadge(project) {
  const badge = el("span.project-badge", { "aria-hidden": "true" });
  if (project.emoji) badge.textContent = project.emoji;
  else badge.append(icon("folder"));
  if (project.color) badge.style.setProperty("--project-color", project.color); // CSSOM: allowed by the CSP
  badge.classList.toggle("colored", Boolean(project.color));
  return badge;
}

export class Projects {
  constructor(app) {
    this.app = app;
    this.section = $("project-section");
    this.listEl = $("project-list");
    this.projects = []; // in the user's order
    this.chats = new Map(); // project id -> Map(conversation id -> conversation), for the open ones
    this.open = new Set(JSON.parse(localStorage.getItem(OPEN_KEY) || "[]"));
    this.dialog = new ProjectDialog(this);
    this.moveDialog = new MoveDialog(this);
    $("new-project").addEventListener("click", () => this.dialog.open(null));
    $("head-project").addEventListener("click", () => {
      const id = this.app.conv ? this.app.conv.project : this.app.draftProject;
      if (id) this.dialog.open(this.byId(id));
    });
  }

  byId(id) {
    return this.projects.find((p) => p.id === id) || null;
  }

  /** A chat shown under an open project (the sidebar's menu and rename look here too). */
  chat(id) {
    for (const chats of this.chats.values()) if (chats.has(id)) return chats.get(id);
    return null;
  }

  visible() {
    return this.projects.filter((p) => p.archived === this.app.sidebar.archived);
  }

  async reload() {
    try {
      this.projects = (await api(projectUrls.list())).results;
    } catch (err) {
      this.listEl.replaceChildren(el("li.sidebar-note.error", { text: err.message }));
      return;
    }
    await Promise.all([...this.open].filter((id) => this.byId(id)).map((id) => this.loadChats(id)));
    this.render();
    this.app.renderProjectHeader();
  }

  async loadChats(id) {
    try {
      const page = await api(urls.conversations({ project: id, limit: 100 }));
      this.chats.set(id, new Map(page.results.map((c) => [c.id, c])));
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  }

  async toggle(id) {
    if (this.open.has(id)) {
      this.open.delete(id);
    } else {
      this.open.add(id);
      await this.loadChats(id);
    }
    localStorage.setItem(OPEN_KEY, JSON.stringify([...this.open]));
    this.render();
  }

  // --- the sidebar's chats, as they change ----------------------------------------------------------------
  /** A chat changed (renamed, pinned, moved): keep each project's list and count right. */
  upsertChat(conv) {
    for (const [projectId, chats] of this.chats) {
      if (chats.has(conv.id) && projectId !== conv.project) chats.delete(conv.id);
    }
    if (conv.project && this.chats.has(conv.project)) {
      const chats = this.chats.get(conv.project);
      if (!chats.has(conv.id)) this.refreshCountsSoon(); // new in this project
      chats.set(conv.id, { ...chats.get(conv.id), ...conv });
    } else if (conv.project && this.byId(conv.project)) {
      // A chat of a closed project was opened or started: open the project, so the chat shows where it lives.
      this.open.add(conv.project);
      localStorage.setItem(OPEN_KEY, JSON.stringify([...this.open]));
      this.loadChats(conv.project).then(() => this.render());
      this.refreshCountsSoon();
    }
    this.render();
  }

  refreshCountsSoon() {
    clearTimeout(this.countsTimer);
    this.countsTimer = setTimeout(() => this.refreshCounts(), 300);
  }

  removeChat(id) {
    for (const chats of this.chats.values()) chats.delete(id);
    this.render();
  }

  async refreshCounts() {
    try {
      const fresh = (await api(projectUrls.list())).results;
      this.projects = fresh;
      this.render();
    } catch {
      // the counts are a nicety: the next reload fixes them
    }
  }

  /** File a chat under a project (null: out of any). Drag and drop and the Move dialog both end here. */
  async moveChat(convId, projectId) {
    const conv = await this.app.patchConversation(convId, { project: projectId });
    const project = projectId ? this.byId(projectId) : null;
    toast(
      project ? interpolate(gettext("Moved to %s."), [project.name]) : gettext("Moved out of the project."),
    );
    this.refreshCounts();
    return conv;
  }

  // --- rendering ---------------------------------------------------------------------------------------------
  render() {
    const shown = this.visible();
    this.section.hidden = this.app.sidebar.archived && !shown.length;
    const items = shown.map((p) => this.renderProject(p));
    if (!shown.length && !this.app.sidebar.archived) {
      items.push(el("li.sidebar-note.project-empty", { text: gettext("Group chats into projects with +.") }));
    }
    this.listEl.replaceChildren(...items);
    this.app.sidebar.setActive(this.app.sidebar.activeId);
  }

  renderProject(project) {
    const isOpen = this.open.has(project.id);
    const toggle = el(
      "button.project-toggle",
      {
        type: "button",
        "aria-expanded": String(isOpen),
        title: project.name,
        on: { click: () => this.toggle(project.id) },
      },
      el("span.project-chevron", { "aria-hidden": "true" }, icon(isOpen ? "chevron-down" : "chevron-right")),
      projectBadge(project),
      el("span.conv-title", { text: project.name }),
      el("span.project-count", {
        text: String(project.conversation_count),
        "aria-label": interpolate(ngettext("%s chat", "%s chats", project.conversation_count), [
          project.conversation_count,
        ]),
      }),
    );
    const add = el(
      "button.icon-btn.conv-more",
      {
        type: "button",
        title: gettext("New chat in this project"),
        "aria-label": interpolate(gettext("New chat in %s"), [project.name]),
        on: { click: () => this.app.newChatIn(project.id) },
      },
      icon("plus"),
    );
    const more = el(
      "button.icon-btn.conv-more",
      {
        type: "button",
        title: gettext("More"),
        "aria-label": interpolate(gettext("Options for project %s"), [project.name]),
        "aria-haspopup": "menu",
        on: { click: (e) => this.app.sidebar.openProjectMenu(project, e.currentTarget) },
      },
      icon("more"),
    );
    const row = el("div.conv-item.project-row", { dataset: { projectId: String(project.id) } }, toggle, add, more);
    const li = el("li.project-item", { dataset: { projectId: String(project.id) } }, row);
    this.dropTarget(row, project);
    if (isOpen) {
      const chats = [...(this.chats.get(project.id) || new Map()).values()]
        .filter((c) => !c.archived)
        .sort((a, b) => (b.updated_at > a.updated_at ? 1 : b.updated_at < a.updated_at ? -1 : b.id - a.id));
      const ul = el("ul.conv-ul.project-chats");
      for (const c of chats) ul.append(this.app.sidebar.renderItem(c));
      if (!chats.length) ul.append(el("li.sidebar-note", { text: gettext("No chats yet. Drag one here.") }));
      li.append(ul);
    }
    return li;
  }

  /** A project row takes a dropped chat (filed under it) or a dropped project (placed before it). */
  dropTarget(row, project) {
    const accepts = (e) => e.dataTransfer.types.includes(CHAT_TYPE) || e.dataTransfer.types.includes(PROJECT_TYPE);
    row.draggable = true;
    row.addEventListener("dragstart", (e) => {
      if (e.target !== row) return;
      e.dataTransfer.setData(PROJECT_TYPE, String(project.id));
      e.dataTransfer.effectAllowed = "move";
      row.classList.add("dragging");
    });
    row.addEventListener("dragend", () => row.classList.remove("dragging"));
    row.addEventListener("dragover", (e) => {
      if (!accepts(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "move";
      row.classList.add("drop-target");
    });
    row.addEventListener("dragleave", () => row.classList.remove("drop-target"));
    row.addEventListener("drop", async (e) => {
      row.classList.remove("drop-target");
      const chatId = Number(e.dataTransfer.getData(CHAT_TYPE));
      const projectId = Number(e.dataTransfer.getData(PROJECT_TYPE));
      e.preventDefault();
      try {
        if (chatId) await this.moveChat(chatId, project.id);
        else if (projectId && projectId !== project.id) await this.placeBefore(projectId, project.id);
      } catch (err) {
        toast(err.message, { kind: "error" });
      }
    });
  }

  // --- order, archive, delete ---------------------------------------------------------------------------------
  async saveOrder(ids) {
    this.projects = (await api(projectUrls.reorder(), { method: "POST", body: { ids } })).results;
    this.render();
  }

  async placeBefore(movedId, beforeId) {
    const ids = this.projects.map((p) => p.id).filter((id) => id !== movedId);
    ids.splice(ids.indexOf(beforeId), 0, movedId);
    await this.saveOrder(ids);
  }

  async step(project, delta) {
    const ids = this.projects.map((p) => p.id);
    const from = ids.indexOf(project.id);
    const visible = this.visible().map((p) => p.id);
    const neighbour = visible[visible.indexOf(project.id) + delta];
    if (neighbour === undefined) return;
    const to = ids.indexOf(neighbour);
    [ids[from], ids[to]] = [ids[to], ids[from]];
    await this.saveOrder(ids);
    const row = this.listEl.querySelector('.project-row[data-project-id="' + project.id + '"] .project-toggle');
    if (row) row.focus();
  }

  async setArchived(project, archived) {
    await this.patch(project.id, { archived });
    toast(archived ? gettext("Project archived.") : gettext("Project restored from the archive."));
  }

  async patch(id, changes) {
    const fresh = await api(projectUrls.one(id), { method: "PATCH", body: changes });
    this.replace(fresh);
    return fresh;
  }

  replace(fresh) {
    const index = this.projects.findIndex((p) => p.id === fresh.id);
    if (index >= 0) this.projects[index] = fresh;
    else this.projects.push(fresh);
    this.render();
    this.app.renderProjectHeader();
  }

  async remove(project) {
    const dialog = $("delete-project-dialog");
    dialog.querySelector("[data-title]").textContent = interpolate(gettext("Delete “%s”?"), [project.name]);
    dialog.querySelector("[data-body]").textContent = interpolate(
      ngettext(
        "It holds %s chat. Keep it (it moves out of the project) or delete it with the project. This cannot be undone.",
        "It holds %s chats. Keep them (they move out of the project) or delete them with the project. This cannot be undone.",
        project.conversation_count,
      ),
      [project.conversation_count],
    );
    dialog.returnValue = "cancel";
    dialog.showModal();
    const choice = await new Promise((resolve) =>
      dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }),
    );
    if (choice !== "keep" && choice !== "delete") return;
    await api(projectUrls.one(project.id) + "?chats=" + choice, { method: "DELETE" });
    this.projects = this.projects.filter((p) => p.id !== project.id);
    this.chats.delete(project.id);
    this.open.delete(project.id);
    toast(choice === "delete" ? gettext("Project and its chats deleted.") : gettext("Project deleted; its chats were kept."));
    const current = this.app.conv && this.app.conv.project === project.id;
    await this.app.sidebar.reload();
    if (current && choice === "delete") this.app.openConversation(null);
    else if (current) this.app.openConversation(this.app.convId, { push: false });
  }
}

/** Create or edit a project: name, emoji, colour, instructions, and (once it exists) its files. */
class ProjectDialog {
  constructor(projects) {
    this.projects = projects;
    this.dialog = $("project-dialog");
    this.form = $("project-form");
    this.error = this.dialog.querySelector("[data-error]");
    this.fileList = this.dialog.querySelector("[data-file-list]");
    this.fileInput = this.dialog.querySelector("[data-file-input]");
    this.project = null;
    for (const swatch of this.dialog.querySelectorAll("[data-swatch]")) {
      if (swatch.dataset.swatch) swatch.style.setProperty("--swatch", swatch.dataset.swatch);
    }
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    this.dialog.querySelector("[data-cancel]").addEventListener("click", () => this.dialog.close());
    this.dialog.querySelector("[data-add-file]").addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      const chosen = [...this.fileInput.files];
      this.fileInput.value = "";
      this.upload(chosen);
    });
  }

  open(project) {
    this.project = project;
    this.error.textContent = "";
    this.dialog.querySelector("[data-heading]").textContent = project ? gettext("Edit project") : gettext("New project");
    this.dialog.querySelector("[data-save]").textContent = project ? gettext("Save") : gettext("Create project");
    const f = this.form.elements;
    f.name.value = project ? project.name : "";
    f.emoji.value = project ? project.emoji : "";
    f.instructions.value = project ? project.instructions : "";
    const color = project ? project.color : "";
    for (const radio of this.form.querySelectorAll('input[name="color"]')) radio.checked = radio.value === color;
    this.renderFiles();
    this.dialog.showModal();
    f.name.focus();
  }

  renderFiles() {
    const addButton = this.dialog.querySelector("[data-add-file]");
    addButton.disabled = !this.project;
    if (!this.project) {
      this.fileList.replaceChildren(el("li.muted.small", { text: gettext("Create the project first, then add files.") }));
      return;
    }
    const files = this.project.files || [];
    if (!files.length) {
      this.fileList.replaceChildren(el("li.muted.small", { text: gettext("No files yet.") }));
      return;
    }
    this.fileList.replaceChildren(
      ...files.map((file) =>
        el(
          "li.project-file",
          {},
          icon("paperclip"),
          el("span.project-file-name", { text: file.name, title: file.name }),
          el("span.muted.small", {
            text: interpolate(gettext("≈ %s tokens"), [Number(file.tokens).toLocaleString()]),
          }),
          el(
            "button.icon-btn",
            {
              type: "button",
              title: gettext("Remove file"),
              "aria-label": interpolate(gettext("Remove %s"), [file.name]),
              on: { click: () => this.removeFile(file) },
            },
            icon("x"),
          ),
        ),
      ),
    );
  }

  async upload(chosen) {
    for (const file of chosen) {
      const form = new FormData();
      form.append("file", file);
      this.error.textContent = interpolate(gettext("Uploading %s…"), [file.name]);
      try {
        this.project = await api(projectUrls.files(this.project.id), { method: "POST", form });
        this.projects.replace(this.project);
        this.error.textContent = "";
      } catch (err) {
        this.error.textContent = file.name + ": " + err.message;
        break;
      }
      this.renderFiles();
    }
  }

  async removeFile(file) {
    try {
      await api(projectUrls.file(this.project.id, file.id), { method: "DELETE" });
      this.project = await api(projectUrls.one(this.project.id));
      this.projects.replace(this.project);
      this.renderFiles();
    } catch (err) {
      this.error.textContent = err.message;
    }
  }

  async save() {
    const f = this.form.elements;
    const body = {
      name: f.name.value,
      emoji: f.emoji.value.trim(),
      color: (this.form.querySelector('input[name="color"]:checked') || {}).value || "",
      instructions: f.instructions.value,
    };
    if (!body.name.trim()) {
      this.error.textContent = gettext("A project needs a name.");
      f.name.focus();
      return;
    }
    try {
      if (this.project) {
        this.project = await this.projects.patch(this.project.id, body);
        this.dialog.close();
      } else {
        this.project = await api(projectUrls.list(), { method: "POST", body });
        this.projects.replace(this.project);
        // Stay open on the new project, so files can be added right away.
        this.open(this.project);
        toast(gettext("Project created."));
      }
    } catch (err) {
      this.error.textContent = err.message;
      const field = err.field && f[err.field];
      if (field && field.focus) field.focus();
    }
  }
}

/** "Move to project" from a chat's menu: the keyboard's way to do what dragging does. */
class MoveDialog {
  constructor(projects) {
    this.projects = projects;
    this.dialog = $("move-dialog");
    this.select = $("move-project");
    this.convId = null;
    $("move-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = this.select.value;
      this.dialog.close();
      try {
        await this.projects.moveChat(this.convId, value ? Number(value) : null);
      } catch (err) {
        toast(err.message, { kind: "error" });
      }
    });
    this.dialog.querySelector("[data-cancel]").addEventListener("click", () => this.dialog.close());
    this.select.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault(); // a select does not submit its form on Enter by itself
        $("move-form").requestSubmit();
      }
    });
  }

  open(conv) {
    this.convId = conv.id;
    this.dialog.querySelector("[data-title]").textContent = conv.title || gettext("New chat");
    const options = [el("option", { value: "", text: gettext("No project") })];
    for (const p of this.projects.projects.filter((p) => !p.archived || p.id === conv.project)) {
      options.push(el("option", { value: String(p.id), text: (p.emoji ? p.emoji + " " : "") + p.name }));
    }
    this.select.replaceChildren(...options);
    this.select.value = conv.project ? String(conv.project) : "";
    this.dialog.showModal();
    this.select.focus();
  }
}

/** The main chat list takes a chat dragged out of a project: it leaves the project. */
export function dropOutOfProject(list, app) {
  list.addEventListener("dragover", (e) => {
    if (!e.dataTransfer.types.includes(CHAT_TYPE) || app.sidebar.archived) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
  });
  list.addEventListener("drop", async (e) => {
    const id = Number(e.dataTransfer.getData(CHAT_TYPE));
    const conv = id && app.sidebar.find(id);
    if (!conv || !conv.project || app.sidebar.archived) return;
    e.preventDefault();
    try {
      await app.projects.moveChat(id, null);
    } catch (err) {
      toast(err.message, { kind: "error" });
    }
  });
}
