// Branches: the thread shown is the conversation's active branch (the messages not marked `superseded_by`); a turn
// with other versions shows ‹ n / m ›, and switching asks the server to make that version's branch the active one
// (POST /api/conversations/<id>/branch/), so a reload shows the same. Edit (any question) and regenerate add versions.
import { api, urls } from "./api.js";
import { ACTIVE } from "./messages.js";
import { el, toast } from "./ui.js";

export const Versions = (Base) => class extends Base {
  /** The active branch, oldest first: one slot per message, with where it stands among its versions. */
  currentThread() {
    const order = (a, b) => {
      const la = typeof a.id !== "number";
      const lb = typeof b.id !== "number";
      if (la !== lb) return la ? 1 : -1; // optimistic local messages go last
      if (la) return a.localOrder - b.localOrder;
      return a.id - b.id;
    };
    return [...this.messages.values()]
      .filter((m) => !m.superseded_by)
      .sort(order)
      .map((m) => ({ head: m, versions: m.versions || null }));
  }

  /** A message left the active branch (an edit's old question, seen by this tab or another): what followed it on
   * the branch left with it. Those are the messages between it and its replacement (ids grow along a branch). */
  leaveBranch(m) {
    if (!m.superseded_by || typeof m.id !== "number") return;
    for (const other of this.messages.values()) {
      if (typeof other.id === "number" && other.id > m.id && other.id < m.superseded_by && !other.superseded_by) {
        other.superseded_by = m.superseded_by;
      }
    }
  }

  /** Show the previous (-1) or next (+1) version of a turn, with its branch's whole continuation. */
  async switchBranch(m, delta) {
    const target = m.versions && (delta < 0 ? m.versions.previous : m.versions.next);
    if (!target || !this.convId || this.isStreaming() || this.switching) return;
    const token = this.loadToken;
    const top = this.elements.get(m.id)?.getBoundingClientRect().top;
    this.switching = true;
    try {
      const data = await api(urls.branch(this.convId), { method: "POST", body: { message_id: target } });
      if (token !== this.loadToken) return;
      this.showBranch(data);
      const node = this.elements.get(target);
      if (node && top !== undefined) this.thread.scrollTop += node.getBoundingClientRect().top - top;
    } catch (err) {
      toast(err.message, { kind: "error" });
    } finally {
      this.switching = false;
      this.updateComposer();
    }
  }

  /** Replace the thread shown by a branch the server sent (the latest page of it). */
  showBranch(data) {
    this.messages.clear();
    this.elements.clear();
    this.dirty.clear();
    for (const m of data.messages) this.messages.set(m.id, m);
    this.hasMore = data.has_more;
    this.renderThread();
  }

  /** A new message answering our edit/regenerate: the one it replaces (and, for an edit, what followed it) leaves
   * the branch shown. */
  applyOp(m) {
    const op = this.ops.get(m.conversation_id);
    if (!op) return;
    if (op.kind === "edit" && m.role === "user" && op.oldUserId && !op.userDone) {
      const old = this.messages.get(op.oldUserId);
      if (old && !old.superseded_by) old.superseded_by = m.id;
      if (old) {
        this.leaveBranch(old);
        m.versions = m.versions || this.newestVersion(old);
      }
      op.userDone = true;
    } else if (m.role === "assistant" && !op.assistantDone) {
      const old = op.oldAssistantId ? this.messages.get(op.oldAssistantId) : null;
      if (old && !old.superseded_by) old.superseded_by = m.id;
      if (old && op.kind === "regenerate") m.versions = m.versions || this.newestVersion(old);
      op.assistantDone = true;
      // The new answer exists: the server took the frame, whichever message carries its client_msg_id.
      this.pending.delete(op.clientMsgId);
      this.socket.forget(op.clientMsgId);
    }
  }

  /** Where a new version of `old` stands until the branch is read again (after its answer): the newest, last. */
  newestVersion(old) {
    const count = (old.versions ? old.versions.count : 1) + 1;
    return { index: count - 1, count, previous: old.id, next: null };
  }

  /** After an edit/regenerate, read the branch again: its turns now say how many versions they have. */
  async refreshVersions() {
    const id = this.convId;
    const token = this.loadToken;
    try {
      const data = await api(urls.conversation(id) + "?limit=100");
      if (token !== this.loadToken) return;
      for (const m of data.messages) {
        const local = this.messages.get(m.id);
        if (local && ACTIVE.has(local.status) && !ACTIVE.has(m.status)) continue;
        this.messages.set(m.id, m);
      }
      this.renderThread();
    } catch {
      // The thread as shown is still right apart from the version counts; the next load will fix it.
    }
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
    this.ops.set(this.convId, { kind: "edit", oldUserId: m.id, oldAssistantId: null, clientMsgId });
    this.pending.set(clientMsgId, { kind: "edit", convId: this.convId, content: text });
    this.socket.send({
      type: "edit", conversation_id: this.convId, message_id: m.id, content: text, client_msg_id: clientMsgId,
    });
    this.updateComposer();
  }
};
