// The chat settings dialog: filled from the model's capabilities, saved to the chat or kept for a new one.
import { $, el, toast } from "./ui.js";

export const Settings = (Base) => class extends Base {
  openSettings() {
    const dialog = $("settings-dialog");
    const form = $("settings-form");
    const model = this.currentModel();
    const caps = this.capabilities(model);
    const source = this.conv || this.draft || {};
    const settings = source.settings || {};
    $("settings-model").textContent = model || "—";
    $("settings-new-note").hidden = Boolean(this.convId);
    form.elements.system_prompt.value = source.system_prompt || "";

    this.setupRange("temperature", caps.temperature, settings.temperature, settings.thinking);
    this.setupRange("top_p", caps.top_p, settings.top_p, settings.thinking);
    form.elements.max_tokens.value = settings.max_tokens ?? "";
    if (caps.context_window) form.elements.max_tokens.max = String(caps.context_window);

    $("row-json_mode").hidden = caps.json_mode === false;
    form.elements.json_mode.checked = Boolean(settings.json_mode);
    $("row-web_search").hidden = !caps.web_search;
    form.elements.web_search.checked = Boolean(settings.web_search);

    const thinking = caps.thinking || "none";
    $("row-thinking").hidden = thinking !== "toggle";
    $("note-thinking-always").hidden = thinking !== "always";
    form.elements.thinking.value = settings.thinking === true ? "on" : settings.thinking === false ? "off" : "";
    this.setupReasoningEffort(caps.reasoning_effort, settings.reasoning_effort);
    form.elements.custom_instructions.checked = source.custom_instructions !== false;
    $("settings-error").textContent = "";
    dialog.showModal();
  }

  /** Offered only where the model has choices (kimi-k3): exactly those, and the model's default. */
  setupReasoningEffort(cap, value) {
    const select = $("settings-form").elements.reasoning_effort;
    $("row-reasoning_effort").hidden = !cap;
    if (!cap) return;
    const labels = { low: gettext("Low"), high: gettext("High"), max: gettext("Max") };
    const name = (choice) => labels[choice] || choice;
    select.replaceChildren(
      el("option", { value: "", text: interpolate(gettext("Model default (%s)"), [name(cap.default)]) }),
      ...cap.choices.map((choice) => el("option", { value: choice, text: name(choice) })),
    );
    select.value = cap.choices.includes(value) ? value : "";
  }

  setupRange(name, cap, value, thinking) {
    const row = $("row-" + name);
    const input = $("settings-form").elements[name];
    const note = row.querySelector("[data-fixed]");
    if (cap && cap.fixed !== undefined) {
      input.hidden = true;
      note.hidden = false;
      const fixed = thinking === false && cap.fixed_without_thinking !== undefined ? cap.fixed_without_thinking : cap.fixed;
      note.textContent = interpolate(gettext("Fixed by this model: %s"), [fixed]);
      input.value = "";
      row.dataset.fixed = "1";
    } else {
      input.hidden = false;
      note.hidden = true;
      row.dataset.fixed = "";
      if (cap && cap.min !== undefined) input.min = String(cap.min);
      if (cap && cap.max !== undefined) input.max = String(cap.max);
      input.value = value ?? "";
    }
  }

  /** The generation settings as the dialog shows them (for the chat, a new chat's draft, or a preset). */
  settingsFromForm() {
    const form = $("settings-form");
    const number = (name) => {
      const row = $("row-" + name);
      if (row && row.dataset.fixed) return null;
      const raw = form.elements[name].value.trim();
      return raw === "" ? null : Number(raw);
    };
    const caps = this.capabilities(this.currentModel());
    const settings = {
      temperature: number("temperature"),
      top_p: number("top_p"),
      max_tokens: number("max_tokens"),
      json_mode: form.elements.json_mode.checked,
      web_search: Boolean(caps.web_search) && form.elements.web_search.checked,
      thinking: caps.thinking === "toggle"
        ? { on: true, off: false }[form.elements.thinking.value] ?? null
        : ((this.conv || this.draft || {}).settings || {}).thinking ?? null,
      reasoning_effort: caps.reasoning_effort
        ? form.elements.reasoning_effort.value || null
        : ((this.conv || this.draft || {}).settings || {}).reasoning_effort ?? null,
    };
    return settings;
  }

  async saveSettings() {
    const form = $("settings-form");
    const settings = this.settingsFromForm();
    const customInstructions = form.elements.custom_instructions.checked;
    if (!this.convId) {
      // No conversation yet: keep the choice and send it with the first message (the server validates it then).
      this.draft = {
        system_prompt: form.elements.system_prompt.value, settings, custom_instructions: customInstructions,
      };
      $("settings-dialog").close();
      toast(gettext("Settings will apply to this new chat."));
      return;
    }
    try {
      await this.patchConversation(this.convId, {
        system_prompt: form.elements.system_prompt.value, settings, custom_instructions: customInstructions,
      });
      $("settings-dialog").close();
      toast(gettext("Settings saved."));
    } catch (err) {
      $("settings-error").textContent = err.message;
    }
  }
};
