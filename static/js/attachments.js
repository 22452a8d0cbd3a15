// Attachments in the composer (docs/attachments.md): the paperclip, drop and paste, a chip per file with its upload
// progress, size and tokens (or the reason it was refused) and a remove button, image thumbnails, the estimate of
// the message with its files before sending, and the files of sent messages in the thread.
import { api, csrfToken } from "./api.js";
import { formatCredits } from "./texts.js";
import { $, el, icon } from "./ui.js";

const MB = 1024 * 1024;

function sizeText(bytes) {
  return bytes >= MB ? (bytes / MB).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
}

function fileUrl(attachment) {
  return `/api/attachments/${attachment.id}/file`;
}

function hasFiles(event) {
  return [...(event.dataTransfer?.types || [])].includes("Files");
}

// A data: URL (the page's CSP allows data: images, not blob:).
function readThumb(file) {
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => resolve(null);
    reader.readAsDataURL(file);
  });
}

export const Attachments = (Base) => class extends Base {
  bindAttachments() {
    this.chips = [];
    this.chipsEl = $("chips");
    this.estimateEl = $("estimate");
    const input = $("attach-input");
    const composer = $("composer");
    $("attach").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.addFiles([...input.files]);
      input.value = "";
    });
    composer.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      composer.classList.add("dropping");
    });
    composer.addEventListener("dragleave", () => composer.classList.remove("dropping"));
    composer.addEventListener("drop", (e) => {
      composer.classList.remove("dropping");
      if (!hasFiles(e)) return;
      e.preventDefault();
      this.addFiles([...e.dataTransfer.files]);
    });
    this.prompt.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData?.files || [])];
      if (!files.length) return;
      e.preventDefault();
      this.addFiles(files);
    });
    this.prompt.addEventListener("input", () => this.scheduleEstimate());
    this.modelPicker.addEventListener("change", () => this.scheduleEstimate());
  }

  /** Files uploaded but not sent (a reload, another tab) come back as chips. */
  async loadUnsentAttachments() {
    try {
      const data = await api("/api/attachments/");
      for (const attachment of data.results) {
        if (this.chips.some((c) => c.attachment && c.attachment.id === attachment.id)) continue;
        this.chips.push({
          key: "a" + attachment.id, name: attachment.name, status: "ready", progress: 1, attachment,
          thumb: attachment.kind === "image" ? fileUrl(attachment) : null,
        });
      }
      this.renderChips();
      this.scheduleEstimate();
    } catch {
      // The composer works without them.
    }
  }

  addFiles(files) {
    for (const file of files) {
      const chip = { key: crypto.randomUUID(), file, name: file.name, status: "uploading", progress: 0, attachment: null };
      this.chips.push(chip);
      if (file.type.startsWith("image/")) {
        readThumb(file).then((url) => {
          chip.thumb = url;
          this.renderChips();
        });
      }
      this.uploadChip(chip);
    }
    this.renderChips();
    this.updateComposer();
  }

  uploadChip(chip) {
    // XMLHttpRequest, not fetch: only it reports upload progress.
    const form = new FormData();
    form.append("file", chip.file, chip.name);
    const model = this.currentModel();
    if (model) form.append("model", model);
    const xhr = new XMLHttpRequest();
    chip.xhr = xhr;
    xhr.open("POST", "/api/attachments/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      chip.progress = e.loaded / e.total;
      this.renderChips();
    });
    const finished = (status, data) => {
      chip.xhr = null;
      if (status === 201 && data) {
        chip.status = "ready";
        chip.attachment = data;
      } else {
        chip.status = "error";
        chip.error = (data && data.error && data.error.message)
          || (status ? interpolate(gettext("The upload failed (HTTP %s)."), [status])
            : gettext("The server could not be reached. Check your connection."));
      }
      this.renderChips();
      this.updateComposer();
      this.scheduleEstimate();
    };
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      finished(xhr.status, data);
    });
    xhr.addEventListener("error", () => finished(0, null));
    xhr.send(form);
  }

  removeChip(chip) {
    this.chips = this.chips.filter((c) => c !== chip);
    if (chip.xhr) chip.xhr.abort();
    if (chip.attachment) api(`/api/attachments/${chip.attachment.id}/`, { method: "DELETE" }).catch(() => {});
    this.renderChips();
    this.updateComposer();
    this.scheduleEstimate();
  }

  renderChips() {
    this.chipsEl.replaceChildren(...this.chips.map((chip) => this.chipEl(chip)));
    this.chipsEl.hidden = !this.chips.length;
  }

  chipEl(chip) {
    const a = chip.attachment;
    let detail;
    if (chip.status === "uploading") {
      // The percent sign travels with the number: interpolate() replaces %s only, and would show a "%%" as is.
      detail = interpolate(gettext("Uploading… %s"), [`${Math.round(chip.progress * 100)}%`]);
    } else if (chip.status === "error") {
      detail = chip.error;
    } else {
      detail = interpolate(gettext("%(size)s · about %(tokens)s tokens"),
        { size: sizeText(a.bytes), tokens: a.tokens.toLocaleString() }, true);
    }
    const visual = chip.thumb ? el("img.chip-thumb", { src: chip.thumb, alt: "" }) : el("span.chip-icon", {}, icon("paperclip"));
    return el(
      "div.chip",
      { dataset: { status: chip.status }, title: chip.name },
      visual,
      el("span.chip-text", {}, el("span.chip-name", { text: chip.name }), el("span.chip-detail", { text: detail })),
      chip.status === "uploading" ? el("progress.chip-progress", { max: 1, value: chip.progress }) : null,
      el("button.chip-remove", {
        type: "button",
        "aria-label": interpolate(gettext("Remove %s"), [chip.name]),
        on: { click: () => this.removeChip(chip) },
      }, icon("x")),
    );
  }

  /** True while a file is still uploading: the message would go without it. */
  attachmentsBusy() {
    return (this.chips || []).some((c) => c.status === "uploading");
  }

  /** The ready files, taken out of the composer for a send (``restoreChips`` puts them back if it is refused). */
  takeAttachments() {
    const taken = (this.chips || []).filter((c) => c.status === "ready");
    this.chips = (this.chips || []).filter((c) => c.status !== "ready");
    this.renderChips();
    this.estimateEl.hidden = true;
    return taken;
  }

  restoreChips(chips) {
    if (!chips || !chips.length) return;
    this.chips = [...chips, ...this.chips.filter((c) => !chips.includes(c))];
    this.renderChips();
    this.scheduleEstimate();
  }

  scheduleEstimate() {
    clearTimeout(this.estimateTimer);
    this.estimateTimer = setTimeout(() => this.estimate(), 250);
  }

  async estimate() {
    const ids = (this.chips || []).filter((c) => c.status === "ready").map((c) => c.attachment.id);
    if (!ids.length) {
      this.estimateEl.hidden = true;
      return;
    }
    const body = { content: this.prompt.value, attachments: ids };
    const model = this.currentModel();
    if (model) body.model = model;
    if (this.convId) body.conversation_id = this.convId;
    try {
      const result = await api("/api/attachments/estimate/", { method: "POST", body });
      this.estimateEl.classList.toggle("warn", !result.fits);
      this.estimateEl.textContent = result.fits
        ? interpolate(gettext("With its files this message is about %(tokens)s tokens and may cost up to %(cost)s credits."),
          { tokens: result.prompt_tokens.toLocaleString(), cost: formatCredits(result.estimated_cost) }, true)
        : result.message;
      this.estimateEl.hidden = false;
    } catch (err) {
      this.estimateEl.classList.add("warn");
      this.estimateEl.textContent = err.message;
      this.estimateEl.hidden = false;
    }
  }

  /** A user message's files, above its text: images as thumbnails, documents by name; each a download. */
  renderFiles(m, node) {
    const files = m.attachments || [];
    const key = files.map((a) => a.id).join(",");
    if (node.rendered.files === key) return;
    node.rendered.files = key;
    let list = node.querySelector(".msg-files");
    if (!files.length) {
      if (list) list.remove();
      return;
    }
    if (!list) {
      list = el("div.msg-files");
      node.querySelector(".msg-body").prepend(list);
    }
    list.replaceChildren(...files.map((a) => (
      a.kind === "image"
        ? el("a.msg-file.msg-image", { href: fileUrl(a), title: a.name, download: a.name }, el("img", { src: fileUrl(a), alt: a.name, loading: "lazy" }))
        : el("a.msg-file", { href: fileUrl(a), download: a.name }, icon("paperclip"), el("span", { text: a.name }))
    )));
  }
};
