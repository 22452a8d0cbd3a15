// Same-origin JSON API calls: session cookie for auth, X-CSRFToken on writes, errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, field, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.details = details; // the error body's other fields (e.g. `settings` of settings_not_supported)
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export async function api(path, { method = "GET", body, form } = {}) {
  const headers = { Accept: "application/json" };
  let payload;
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  if (form !== undefined) {
    payload = form;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", gettext("The server could not be reached. Check your connection."));
  }
  if (response.status === 401) {
    window.location.assign("/accounts/login/?next=" + encodeURIComponent(window.location.pathname));
    throw new ApiError(401, "not_authenticated", gettext("Log in to continue."));
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(
      response.status,
      err.code || "http_" + response.status,
      err.message || interpolate(gettext("Request failed (HTTP %s)."), [response.status]),
      err.field,
      err,
    );
  }
  return data;
}

export const urls = {
  me: () => "/api/me/",
  models: () => "/api/models/",
  conversations: (params) => "/api/conversations/?" + new URLSearchParams(params).toString(),
  conversation: (id) => "/api/conversations/" + encodeURIComponent(id) + "/",
  exportMd: (id) => "/api/conversations/" + encodeURIComponent(id) + "/export.md",
  exportJson: (id) => "/api/conversations/" + encodeURIComponent(id) + "/export.json",
  exportAll: () => "/api/export/all.zip",
  importFile: () => "/api/import/",
  search: (q) => "/api/search/?q=" + encodeURIComponent(q),
  branch: (id) => "/api/conversations/" + encodeURIComponent(id) + "/branch/",
  share: (id) => "/api/conversations/" + encodeURIComponent(id) + "/share/",
  shares: (id) => "/api/conversations/" + encodeURIComponent(id) + "/shares/",
  revokeShare: (token) => "/api/shares/" + encodeURIComponent(token) + "/",
  title: (id) => "/api/conversations/" + encodeURIComponent(id) + "/title/",
  preferences: () => "/api/me/preferences/",
  presets: () => "/api/presets/",
  preset: (id) => "/api/presets/" + encodeURIComponent(id) + "/",
  feedback: (id) => "/api/messages/" + encodeURIComponent(id) + "/feedback/",
};
