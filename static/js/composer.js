// The composer: the prompt box, send and stop, and the model picker's changes.
import { $, copyText, toast } from "./ui.js";

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
};
