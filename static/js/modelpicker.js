// The model picker: a listbox of the server's models grouped by family (aliases together), each with what it is
// for and its price, and the price of the chosen model under the composer. Its button (#model-picker) holds the
// chosen id as its value.
import { formatCredits } from "./texts.js";
import { $, el } from "./ui.js";

export const ModelPicker = (Base) => class extends Base {
  bindModelPicker() {
    this.modelList = $("model-list");
    this.modelPicker.addEventListener("click", () => {
      if (this.modelList.hidden) this.openModelList();
      else this.closeModelList();
    });
    this.modelPicker.addEventListener("keydown", (e) => {
      if (["ArrowDown", "ArrowUp", "Enter", " "].includes(e.key)) {
        e.preventDefault();
        this.openModelList();
      }
    });
    this.modelList.addEventListener("keydown", (e) => this.onModelListKey(e));
    this.modelList.addEventListener("click", (e) => {
      const option = e.target.closest("[role=option]");
      if (option) this.pickModelOption(option);
    });
    this.modelList.addEventListener("mousemove", (e) => {
      const option = e.target.closest("[role=option]");
      if (option) this.setActiveOption(option, { scroll: false });
    });
    document.addEventListener("click", (e) => {
      if (!this.modelList.hidden && !$("model-menu").contains(e.target)) this.closeModelList({ focus: false });
    });
  }

  modelLabel(id) {
    const found = this.models.find((m) => m.id === id);
    return (found && found.name) || id || "—";
  }

  /** "per 1M tokens: 2 in / 8 out" or "0.5 credits per message"; empty when the server sent no price. */
  priceText(price) {
    if (!price) return "";
    const perRequest = Number(price.per_request);
    const tokens = Number(price.per_million_prompt) > 0 || Number(price.per_million_completion) > 0;
    const parts = [];
    if (tokens) {
      parts.push(interpolate(gettext("%(prompt)s in / %(completion)s out credits per million tokens"), {
        prompt: formatCredits(price.per_million_prompt), completion: formatCredits(price.per_million_completion),
      }, true));
    }
    if (perRequest > 0) parts.push(interpolate(gettext("%s credits per message"), [formatCredits(price.per_request)]));
    return parts.length ? parts.join(" + ") : gettext("Free");
  }

  /** What a model is for, in a few words: thinking, vision, code, its context window. */
  modelFacts(m) {
    const caps = m.capabilities || {};
    const facts = [];
    if (caps.thinking === "always") facts.push(gettext("Thinks first"));
    else if (caps.thinking === "toggle") facts.push(gettext("Thinking on/off"));
    if (caps.image_in) facts.push(gettext("Vision"));
    if (/(^|-)code(-|$)/.test(m.id)) facts.push(gettext("Code"));
    const context = caps.context_window;
    if (context >= 1000000) facts.push(interpolate(gettext("%sM context"), [Math.round(context / 100000) / 10]));
    else if (context) facts.push(interpolate(gettext("%sK context"), [Math.round(context / 1024)]));
    return facts.join(" · ");
  }

  renderModelPicker() {
    const current = this.currentModel();
    const models = [...this.models];
    if (current && !models.some((m) => m.id === current)) models.unshift({ id: current, name: current });
    const families = new Map();
    for (const m of models) {
      const family = m.family || m.name || m.id;
      if (!families.has(family)) families.set(family, []);
      families.get(family).push(m);
    }
    let n = 0;
    const groups = [...families].map(([family, members], g) =>
      el(
        "div.model-group",
        { role: "group", "aria-labelledby": "model-group-" + g },
        el("div.model-group-label", { id: "model-group-" + g, text: family }),
        ...members.map((m) =>
          el(
            "div.model-option",
            { role: "option", id: "model-option-" + n++, dataset: { value: m.id }, "aria-selected": String(m.id === current) },
            el("span.model-option-name", { text: m.name || m.id }),
            el("span.model-option-facts", { text: [this.modelFacts(m), this.priceText(m.price)].filter(Boolean).join(" · ") }),
          )),
      ));
    this.modelList.replaceChildren(...groups);
    this.modelPicker.value = current || "";
    this.modelPicker.querySelector("[data-name]").textContent = this.modelLabel(current);
    this.modelPicker.disabled = models.length === 0;
    const chosen = models.find((m) => m.id === current);
    const price = chosen ? this.priceText(chosen.price) : "";
    $("model-price").textContent = price
      ? interpolate(gettext("%(model)s: %(price)s"), { model: this.modelLabel(current), price }, true)
      : "";
  }

  modelOptions() {
    return [...this.modelList.querySelectorAll("[role=option]")];
  }

  openModelList() {
    if (this.modelPicker.disabled) return;
    this.modelList.hidden = false;
    this.modelPicker.setAttribute("aria-expanded", "true");
    const selected = this.modelList.querySelector("[aria-selected=true]") || this.modelOptions()[0];
    this.modelList.focus();
    if (selected) this.setActiveOption(selected);
  }

  closeModelList({ focus = true } = {}) {
    if (this.modelList.hidden) return;
    this.modelList.hidden = true;
    this.modelPicker.setAttribute("aria-expanded", "false");
    this.modelList.removeAttribute("aria-activedescendant");
    if (focus) this.modelPicker.focus();
  }

  setActiveOption(option, { scroll = true } = {}) {
    for (const o of this.modelList.querySelectorAll(".model-option.active")) o.classList.remove("active");
    option.classList.add("active");
    this.modelList.setAttribute("aria-activedescendant", option.id);
    if (scroll) option.scrollIntoView({ block: "nearest" });
  }

  onModelListKey(e) {
    const options = this.modelOptions();
    const active = this.modelList.querySelector(".model-option.active");
    const at = Math.max(0, options.indexOf(active));
    const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: options.length - 1, PageDown: at + 5, PageUp: at - 5 };
    if (e.key in move) {
      e.preventDefault();
      this.setActiveOption(options[Math.max(0, Math.min(options.length - 1, move[e.key]))]);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      if (active) this.pickModelOption(active);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation(); // Esc closes the list, it does not stop an answer
      this.closeModelList();
    } else if (e.key === "Tab") {
      this.closeModelList({ focus: false });
    }
  }

  pickModelOption(option) {
    this.closeModelList();
    this.chooseModel(option.dataset.value);
  }
};
