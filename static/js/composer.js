// The composer: the prompt box, send and stop, and the model picker's changes.
import { $, confirmDialog, copyText, toast } from "./ui.js";

export const Composer = (Base) => class extends Base {
  bindComposer() {
    this.prompt.addEventListener("input", () => {
      this.autosize();
      this.updateComposer();
    });
    this.prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        this.submit();
      } else if (e.key === "ArrowUp" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing &&
        this.prompt.value === "" && this.editLastMessage()) {
        e.preventDefault();
      }
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.stopButton.addEventListener("click", () => this.stop());
    this.messagesEl.addEventListener("click", (e) => {
      const button = e.target.closest(".copy-code");
      if (!button) return;
      const code = button.closest(".codeblock").querySelector("code");
      copyText(code.textContent).then(() => {
        // Say it on the button pressed: the toast is far from the code block.
        button.textContent = gettext("Copied");
        button.classList.add("copied");
        clearTimeout(button.copiedTimer);
        button.copiedTimer = setTimeout(() => {
          button.textContent = gettext("Copy");
          button.classList.remove("copied");
        }, 2000);
      });
    });
  }

  /** Switch the chat (or the chat about to start) to ``model``. Settings the model does not take are never kept
   * silently (every send would then be refused): the switch is refused with the reason, or they are reset. */
  async chooseModel(model) {
    if (model === this.currentModel()) return;
    if (!(this.convId && this.conv)) {
      const conflicts = this.draftConflicts(model);
      if (conflicts.length && !(await this.confirmSettingsReset(model, conflicts, ""))) {
        this.renderModelPicker();
        return;
      }
      for (const name of conflicts) this.draft.settings[name] = name === "json_mode" ? false : null;
      this.draftModel = model;
      this.renderModelPicker();
      return;
    }
    try {
      await this.patchConversation(this.convId, { model });
    } catch (err) {
      const conflicts = err.code === "settings_not_supported" ? err.details.settings || [] : [];
      if (!conflicts.length) toast(err.message, { kind: "error" });
      else if (await this.confirmSettingsReset(model, conflicts, err.message)) {
        const reset = Object.fromEntries(conflicts.map((name) => [name, name === "json_mode" ? false : null]));
        try {
          await this.patchConversation(this.convId, { model, settings: reset });
        } catch (again) {
          toast(again.message, { kind: "error" });
        }
      }
      this.renderModelPicker();
    }
  }

  /** The draft settings of a new chat that ``model`` would refuse (the server checks them at the first send). */
  draftConflicts(model) {
    const settings = (this.draft && this.draft.settings) || {};
    const caps = this.capabilities(model);
    const outside = (cap, value) => value !== null && value !== undefined && cap &&
      (cap.fixed !== undefined ? Math.abs(value - cap.fixed) > 1e-9 : value < cap.min || value > cap.max);
    const conflicts = ["temperature", "top_p"].filter((name) => outside(caps[name], settings[name]));
    const limit = caps.max_tokens && caps.max_tokens.max;
    if (limit && settings.max_tokens > limit) conflicts.push("max_tokens");
    if (settings.thinking === false && caps.thinking === "always") conflicts.push("thinking");
    return conflicts;
  }

  confirmSettingsReset(model, conflicts, reason) {
    const labels = {
      temperature: gettext("Temperature"), top_p: gettext("Top P"), max_tokens: gettext("Max tokens"),
      thinking: gettext("Thinking"), json_mode: gettext("JSON mode"),
    };
    const names = conflicts.map((name) => labels[name] || name).join(", ");
    const body = interpolate(gettext("%(model)s does not accept this chat's settings: %(settings)s."),
      { model: this.modelLabel(model), settings: names }, true);
    return confirmDialog({
      title: interpolate(gettext("Switch to %s?"), [this.modelLabel(model)]),
      body: (reason ? body + " " + reason : body) + " " + gettext("Reset them to the model's defaults and switch?"),
      confirmLabel: gettext("Reset and switch"),
    });
  }

  /** ↑ in the empty composer: edit the last question of the branch shown, where its Edit button would. */
  editLastMessage() {
    if (this.isStreaming()) return false;
    const questions = this.currentThread().filter((slot) => slot.head.role === "user");
    const m = questions.length ? questions[questions.length - 1].head : null;
    if (!m || typeof m.id !== "number") return false;
    const node = this.elements.get(m.id);
    if (!node || !node.isConnected || node.querySelector(".edit-area")) return false;
    node.scrollIntoView({ block: "nearest" });
    this.startEdit(m, node);
    return true;
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
    this.sendButton.disabled = pending || !this.prompt.value.trim() || this.attachmentsBusy();
    this.root.classList.toggle("send-pending", pending);
  }

  submit() {
    if (!this.ready) {
      // Sent before the page finished opening its chat: opening it would drop the message from view. Send it then.
      this.submitWhenReady = true;
      return;
    }
    if (this.isStreaming() || this.sendPending() || this.attachmentsBusy()) return;
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
    const chips = this.takeAttachments(); // given back by onError if the send is refused
    const attachments = chips.map((c) => c.attachment);
    this.localOrder = (this.localOrder || 0) + 1;
    this.messages.set(localId, {
      id: localId, localOrder: this.localOrder, conversation_id: convId, role: "user", content: text,
      status: "pending", superseded_by: null, attachments,
    });
    this.pending.set(clientMsgId, { kind: "send", convId, content: text, localId, openedFrom: this.loadToken, chips });
    const frame = { type: "send", conversation_id: convId, content: text, client_msg_id: clientMsgId };
    if (attachments.length) frame.attachments = attachments.map((a) => a.id);
    const model = this.currentModel();
    if (model) frame.model = model;
    // The draft stays until the server accepts the send (adoptNewConversation): a refused first send keeps it.
    if (!convId && this.draft) frame.conversation = this.draft;
    if (!convId && this.draftProject) frame.conversation = { ...frame.conversation, project: this.draftProject };
    if (!convId && this.temporaryDraft) frame.conversation = { ...(frame.conversation || {}), temporary: true };
    this.socket.send(frame);
    if (convId) this.sidebar.touch(convId);
    this.renderThread();
    this.scrollToBottom();
  }

  stop() {
    if (!this.convId || !this.isStreaming()) return;
    this.socket.send({ type: "stop", conversation_id: this.convId });
  }
};
