// Personalisation: theme and chat width (remembered on the server, which puts them on <html> before the page
// paints), custom instructions, presets to start a chat with, feedback on answers, and a chat's title written again.
import { api, urls } from "./api.js";
import { $, el, icon, toast } from "./ui.js";

const THEMES = ["light", "dark", "system"];

/** Apply a theme now: <html data-theme>, and the code highlighting's stylesheets. */
export function applyTheme(theme) {
  const root = document.documentElement;
  root.dataset.theme = theme;
  const light = $("hljs-light");
  const dark = $("hljs-dark");
  if (light && dark) {
    light.media = theme === "light" ? "all" : theme === "dark" ? "not all" : "(prefers-color-scheme: light)";
    dark.media = theme === "dark" ? "all" : theme === "light" ? "not all" : "(prefers-color-scheme: dark)";
  }
  for (const button of document.querySelectorAll("[data-theme-choice]")) {
    button.setAttribute("aria-pressed", String(button.dataset.themeChoice === theme));
  }
}

export const Personal = (Base) => class extends Base {
  bindPersonal() {
    this.presets = [];
    for (const button of document.querySelectorAll("[data-theme-choice]")) {
      button.addEventListener("click", () => this.saveTheme(button.dataset.themeChoice));
    }
    $("open-personal").addEventListener("click", () => {
      $("user-menu").open = false;
      this.openPersonal();
    });
    $("personal-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.savePersonal();
    });
    $("personal-cancel").addEventListener("click", () => $("personal-dialog").close());
    $("save-preset").addEventListener("click", () => this.saveAsPreset());
    $("feedback-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendFeedback("down", $("feedback-note").value);
    });
    $("feedback-cancel").addEventListener("click", () => $("feedback-dialog").close());
    this.loadPresets();
  }

  // --- theme, width, custom instructions ------------------------------------------------------------------
  async saveTheme(theme) {
    if (!THEMES.includes(theme)) return;
    const before = document.documentElement.dataset.theme;
    applyTheme(theme);
    try {
      await api(urls.preferences(), { method: "PATCH", body: { theme } });
    } catch (err) {
      applyTheme(before);
      toast(err.message, { kind: "error" });
    }
  }

  async openPersonal() {
    const form = $("personal-form");
    $("personal-error").textContent = "";
    try {
      const prefs = await api(urls.preferences());
      form.elements.about.value = prefs.about;
      form.elements.answer_style.value = prefs.answer_style;
      form.elements.theme.value = prefs.theme;
      form.elements.chat_width.value = prefs.chat_width;
    } catch (err) {
      toast(err.message, { kind: "error" });
      return;
    }
    $("personal-dialog").showModal();
  }

  async savePersonal() {
    const form = $("personal-form");
    const body = {
      about: form.elements.about.value,
      answer_style: form.elements.answer_style.value,
      theme: form.elements.theme.value,
      chat_width: form.elements.chat_width.value,
    };
    try {
      const prefs = await api(urls.preferences(), { method: "PATCH", body });
      applyTheme(prefs.theme);
      document.documentElement.dataset.chatWidth = prefs.chat_width;
      $("personal-dialog").close();
      toast(gettext("Personalisation saved."));
    } catch (err) {
      $("personal-error").textContent = err.message;
    }
  }

  // --- presets --------------------------------------------------------------------------------------------
  async loadPresets() {
    try {
      this.presets = (await api(urls.presets())).results;
    } catch {
      this.presets = [];
    }
    this.renderPresets();
  }

  renderPresets() {
    const box = $("presets");
    box.hidden = !this.presets.length;
    box.replaceChildren(
      ...this.presets.map((p) => {
        const chosen = this.presetId === p.id;
        return el(
          "span.preset" + (chosen ? ".chosen" : ""),
          {},
          el("button.preset-pick", {
            type: "button",
            text: p.name,
            title: [p.model || gettext("Default model"), p.system_prompt].filter(Boolean).join("\n"),
            "aria-pressed": String(chosen),
            on: { click: () => this.applyPreset(chosen ? null : p) },
          }),
          el(
            "button.preset-delete",
            {
              type: "button",
              title: interpolate(gettext("Delete the preset “%s”"), [p.name]),
              "aria-label": interpolate(gettext("Delete the preset “%s”"), [p.name]),
              on: { click: () => this.deletePreset(p) },
            },
            icon("x"),
          ),
        );
      }),
    );
  }

  /** A preset fills the new chat's model and settings (the draft the first send carries); null clears them. */
  applyPreset(preset) {
    if (this.convId) return;
    this.presetId = preset ? preset.id : null;
    if (preset) {
      const known = this.models.some((m) => m.id === preset.model);
      this.draftModel = known ? preset.model : null;
      this.draft = { system_prompt: preset.system_prompt, settings: { ...preset.settings } };
      toast(interpolate(gettext("Preset “%s” applies to this new chat."), [preset.name]));
    } else {
      this.draftModel = null;
      this.draft = null;
    }
    this.renderPresets();
    this.renderHeader();
    this.prompt.focus();
  }

  async saveAsPreset() {
    const name = window.prompt(gettext("Name of the preset:"));
    if (!name || !name.trim()) return;
    const form = $("settings-form");
    const settings = this.settingsFromForm();
    const body = { name: name.trim(), model: this.currentModel() || "", system_prompt: form.elements.system_prompt.value, settings };
    try {
      const preset = await api(urls.presets(), { method: "POST", body });
      this.presets = [...this.presets, preset].sort((a, b) => a.name.localeCompare(b.name));
      this.renderPresets();
      toast(interpolate(gettext("Preset “%s” saved."), [preset.name]));
    } catch (err) {
      $("settings-error").textContent = err.message;
    }
  }

  async deletePreset(preset) {
    try {
      await api(urls.preset(preset.id), { method: "DELETE" });
    } catch (err) {
      toast(err.message, { kind: "error" });
      return;
    }
    this.presets = this.presets.filter((p) => p.id !== preset.id);
    if (this.presetId === preset.id) this.applyPreset(null);
    this.renderPresets();
  }

  // --- feedback -------------------------------------------------------------------------------------------
  feedbackButtons(m) {
    const rated = this.ratings && this.ratings.has(m.id) ? this.ratings.get(m.id) : m.feedback || null;
    const button = (rating, label) =>
      el(
        "button.icon-btn.thumb" + (rated === rating ? ".chosen" : ""),
        {
          type: "button",
          title: label,
          "aria-label": label,
          "aria-pressed": String(rated === rating),
          dataset: { rating },
          on: { click: () => this.rate(m, rating) },
        },
        icon(rating === "up" ? "thumb-up" : "thumb-down"),
      );
    return [button("up", gettext("Good answer")), button("down", gettext("Bad answer"))];
  }

  rate(m, rating) {
    this.feedbackFor = m;
    if (rating === "down") {
      $("feedback-note").value = "";
      $("feedback-error").textContent = "";
      $("feedback-dialog").showModal();
      return;
    }
    this.sendFeedback("up", "");
  }

  async sendFeedback(rating, note) {
    const m = this.feedbackFor;
    if (!m) return;
    try {
      await api(urls.feedback(m.id), { method: "PUT", body: { rating, note } });
    } catch (err) {
      if ($("feedback-dialog").open) $("feedback-error").textContent = err.message;
      else toast(err.message, { kind: "error" });
      return;
    }
    $("feedback-dialog").close();
    this.ratings = this.ratings || new Map();
    this.ratings.set(m.id, rating);
    m.feedback = rating;
    const node = this.elements.get(m.id);
    if (node) {
      for (const b of node.querySelectorAll(".thumb")) {
        b.classList.toggle("chosen", b.dataset.rating === rating);
        b.setAttribute("aria-pressed", String(b.dataset.rating === rating));
      }
    }
    toast(gettext("Thank you for the feedback."));
  }

  // --- titles ---------------------------------------------------------------------------------------------
  async regenerateTitle(id) {
    toast(gettext("Writing a new title…"));
    const conv = await api(urls.title(id), { method: "POST" });
    this.sidebar.upsert(conv);
    if (id === this.convId) this.applyConversation(conv);
  }
};
