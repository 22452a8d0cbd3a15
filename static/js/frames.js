// The websocket's frames and connection state applied to the page (docs/websocket-protocol.md).
import { ACTIVE } from "./messages.js";
import { BUDGET_CODES, errorText } from "./texts.js";
import { $, toast } from "./ui.js";

export const Frames = (Base) => class extends Base {
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
      case "tool":
        return this.onToolFrame(frame);
      default:
        return undefined;
    }
  }

  onConversationFrame(conv) {
    if (!conv) return;
    this.announced = conv; // a chat this tab's send created: adopted by its first message frame
    if (conv.title_source === "generated") this.loadMe(); // a generated title may have cost credits
    this.sidebar.upsert(conv);
    if (conv.id === this.convId) this.applyConversation(conv);
  }

  onMessageFrame(m) {
    if (!m) return;
    const pending = m.client_msg_id ? this.pending.get(m.client_msg_id) : null;
    if (pending) {
      this.pending.delete(m.client_msg_id);
      if (this.creditsNotice) this.hideCreditsNotice(); // a send went through: there were credits enough
      this.hideBudgetNotice();
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
    // An edit (in this tab or another) moved the branch: this message and what followed it leave the thread shown.
    const leaving = Boolean(m.superseded_by) && !this.messages.get(m.id)?.superseded_by;
    if (isNew) this.applyOp(m);
    this.upsertMessage(m, { render: !isNew && !leaving });
    if (leaving) this.leaveBranch(m);
    if (isNew || leaving) {
      const stick = this.nearBottom() || m.role === "user";
      this.renderThread();
      if (stick) this.scrollToBottom();
    } else if (pending) {
      this.renderThread();
    }
  }

  adoptNewConversation(id) {
    this.convId = id;
    this.socket.subscribed = id; // the server subscribed this socket when it created the conversation
    history.replaceState({}, "", "/c/" + id + "/");
    this.sidebar.setActive(id);
    const announced = this.announced && this.announced.id === id ? this.announced : null;
    this.conv = this.sidebar.conversations.get(id) || announced || this.conv || { id, title: "", model: this.currentModel() };
    if (this.draftModel) this.conv.model = this.draftModel;
    this.draftModel = null;
    this.draft = null; // the server took the draft settings with the chat it created
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
    if (this.continuing) this.continuing.delete(frame.message_id);
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
    if (existing && existing.versions && !final.versions) final.versions = existing.versions;
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

  /** Continue an answer that was cut off, in place (docs/websocket-protocol.md, `continue`). */
  continueAnswer(m) {
    if (!this.convId || this.isStreaming()) return;
    const clientMsgId = crypto.randomUUID();
    this.pending.set(clientMsgId, { kind: "continue", convId: this.convId, content: "" });
    this.continuing = this.continuing || new Set();
    this.continuing.add(m.id);
    this.socket.send({ type: "continue", conversation_id: this.convId, message_id: m.id, client_msg_id: clientMsgId });
    this.updateComposer();
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
      if (p.kind === "send") this.restoreChips(p.chips);
      const retry = frame.retryable && p.kind === "send"
        ? { label: gettext("Retry"), run: () => this.sendText(p.content, p.convId) }
        : null;
      if (frame.code === "insufficient_credits") this.showCreditsNotice(text, frame.balance);
      else if (BUDGET_CODES.has(frame.code)) this.showBudgetNotice(text);
      else toast(text, { kind: "error", action: retry, timeout: retry ? 10000 : 7000 });
      this.updateComposer();
      return;
    }
    if (frame.message_id && this.messages.has(frame.message_id)) {
      const m = this.messages.get(frame.message_id);
      // The done frame follows with the stored status; a continuation that failed before adding anything goes
      // back to how it was, so only this toast says why.
      if (ACTIVE.has(m.status) && !(this.continuing && this.continuing.has(m.id))) return;
    }
    toast(text, { kind: "error" });
  }
};
