// Small DOM helpers shared by the chat page. Text always goes in through textContent.

/** The chat page addresses its fixed parts by id, many times over. */
export const $ = (id) => document.getElementById(id);

/** el("div.a.b", {attrs}, children...) — strings become text nodes, never markup. */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
/** An icon from the sprite in chat.html. */
export function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", "#i-" + name);
  svg.append(use);
  return svg;
}

export function iconButton(name, label, onClick, extraClass = "") {
  return el(
    "button.icon-btn" + (extraClass ? "." + extraClass : ""),
    { type: "button", title: label, "aria-label": label, on: { click: onClick } },
    icon(name),
  );
}

export function toast(message, { kind = "info", action = null, timeout = 5000 } = {}) {
  const box = document.getElementById("toasts");
  const item = el("div.toast." + kind, { role: kind === "error" ? "alert" : "status" }, el("span", { text: message }));
  if (action) {
    item.append(
      el("button.link", {
        type: "button",
        text: action.label,
        on: {
          click: () => {
            item.remove();
            action.run();
          },
        },
      }),
    );
  }
  item.append(iconButton("x", gettext("Dismiss"), () => item.remove()));
  box.append(item);
  if (timeout) setTimeout(() => item.remove(), timeout);
  return item;
}

/** A styled confirmation (<dialog>), resolving true or false. */
export function confirmDialog({ title, body, confirmLabel, danger = false }) {
  const dialog = document.getElementById("confirm-dialog");
  dialog.querySelector("[data-title]").textContent = title;
  dialog.querySelector("[data-body]").textContent = body;
  const ok = dialog.querySelector("[data-ok]");
  ok.textContent = confirmLabel;
  ok.classList.toggle("danger", danger);
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok");
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
    ok.focus();
  });
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (no permission / insecure origin): fall back to a selection copy.
    const area = el("textarea.offscreen", { readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      area.remove();
    }
  }
  toast(gettext("Copied to clipboard"), { timeout: 1800 });
}

// --- dates -------------------------------------------------------------------------------------------------
function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}

/** The sidebar group of a conversation: today, yesterday, week, month (30 days), then "month:YYYY-MM". */
export function dateGroup(iso, now = new Date()) {
  const when = new Date(iso);
  const days = Math.round((startOfDay(now) - startOfDay(when)) / 86400000);
  if (days <= 0) return "today";
  if (days === 1) return "yesterday";
  if (days < 7) return "week";
  if (days < 30) return "month";
  // Older chats by calendar month: "month:2026-11".
  return "month:" + when.getFullYear() + "-" + String(when.getMonth() + 1).padStart(2, "0");
}

export function groupLabel(group) {
  if (group.startsWith("month:")) {
    const [year, month] = group.slice(6).split("-").map(Number);
    return new Date(year, month - 1, 1).toLocaleDateString(document.documentElement.lang || undefined, {
      month: "long",
      year: "numeric",
    });
  }
  return {
    pinned: gettext("Pinned"),
    today: gettext("Today"),
    yesterday: gettext("Yesterday"),
    week: gettext("Previous 7 days"),
    month: gettext("Previous 30 days"),
    archived: gettext("Archived"),
  }[group];
}

export function formatDateTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(document.documentElement.lang || undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
