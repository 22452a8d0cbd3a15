// Message versions: grouping a thread's versions, browsing them, and the edit and regenerate that make new ones.
import { api, urls } from "./api.js";
import { ACTIVE } from "./messages.js";
import { el } from "./ui.js";

export const Versions = (Base) => class extends Base {
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
    return this.pairTurns(heads.map((head) => ({ head, versions: versions.get(head.id).sort(order) })));
  }

  /** Versions of a turn move together: an answer's arrows browse only the answers to the question shown above it
   * (an edit supersedes the question and its answer, a regenerate only the answer, so one answer chain holds the
   * answers to every version of the question). An answer belongs to the newest question version older than it. */
  pairTurns(slots) {
    for (let i = 1; i < slots.length; i++) {
      const question = slots[i - 1];
      const answer = slots[i];
      if (question.head.role !== "user" || answer.head.role !== "assistant" || question.versions.length < 2) continue;
      const shownId = this.versionView.get(question.head.id) ?? question.head.id;
      const shown = question.versions.find((v) => v.id === shownId) || question.head;
      const questionOf = (a) => {
        if (typeof a.id !== "number") return question.head;
        return question.versions.filter((u) => typeof u.id === "number" && u.id < a.id).pop() || question.head;
      };
      const answers = answer.versions.filter((a) => questionOf(a) === shown);
      if (answers.length) answer.versions = answers;
      answer.earlierQuestion = shown !== question.head; // regenerate/retry act on the latest question only
    }
    return slots;
  }

  showVersion(slot, delta) {
    const index = Math.max(0, Math.min(slot.versions.length - 1, slot.index + delta));
    this.versionView.set(slot.head.id, slot.versions[index].id);
    this.renderThread();
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
};
