// What the user reads for an error code, and how credit amounts are written.

/** What to tell the user for an error code, in their language, with the details the server sent as fields. */
export function errorText(code, fallback, details = {}) {
  // About attachments the server's (translated) message names the file and its sizes: show it as it is.
  if (fallback && (details.attachment_id !== undefined || details.attachment_tokens !== undefined)) return fallback;
  const seconds = details.retry_after;
  const known = {
    empty_message: gettext("Type a message first."),
    message_too_long: details.limit
      ? interpolate(gettext("The message is too long (the limit is %s characters)."), [details.limit])
      : gettext("The message is too long."),
    unknown_model: gettext("That model is not available."),
    not_found: gettext("This chat no longer exists."),
    busy: gettext("An answer is still being written in this chat."),
    too_many_answers: gettext("Too many answers are being written at once. Wait for one to finish."),
    context_too_long: gettext("The message is too long for this model."),
    insufficient_credits: details.estimated_cost !== undefined
      ? interpolate(
        gettext("Not enough credits: this message may cost up to %(cost)s and you have %(balance)s."),
        { cost: formatCredits(details.estimated_cost), balance: formatCredits(details.balance) }, true)
      : gettext("Not enough credits for this message."),
    ...budgetTexts(details),
    model_not_allowed: gettext("This model is not available to your account. Pick another model."),
    rate_limited: seconds
      ? interpolate(gettext("Too many requests. Try again in %s seconds."), [seconds])
      : gettext("Too many requests. Try again in a moment."),
    invalid_parameter: fallback // the server names the setting and the model's rule
      ? interpolate(gettext("A setting of this chat is not accepted by the chosen model: %s"), [fallback])
      : gettext("A setting of this chat is not accepted by the chosen model."),
    server_error: gettext("Something went wrong on our side. Try again."),
    server_shutdown: gettext("The server restarted while this answer was being written."),
    worker_lost: gettext("The server stopped while this answer was being written; it was cut off."),
    time_limit: gettext("The answer took longer than the server allows and was cut off."),
    tool_rounds_exceeded: gettext("The answer needed too many rounds of web search and was stopped."),
    tool_time_exceeded: gettext("The web search took too long and the answer was stopped."),
    tool_budget_exceeded: gettext("The web search would have cost more than was reserved for this answer, so it was stopped."),
    bad_request: gettext("Kimi rejected the request as invalid."),
    content_filtered: gettext("Kimi declined this request because of its content policy."),
    model_not_found: gettext("This model is not available. Pick another model."),
    upstream_auth_failed: gettext("The server's Kimi API key was rejected. Please contact the administrator."),
    upstream_quota_exceeded: gettext("The Kimi account of this server is out of quota. Please contact the administrator."),
    upstream_access_denied: gettext("The server's Kimi account may not use this model or endpoint. Please contact the administrator."),
    upstream_not_found: gettext("The server's Kimi address is wrong (the endpoint was not found). Please contact the administrator."),
    upstream_rate_limited: gettext("Kimi is receiving too many requests right now. Please try again shortly."),
    upstream_overloaded: gettext("Kimi is overloaded right now. Please try again shortly."),
    upstream_server_error: gettext("Kimi had an internal error. Please try again."),
    upstream_timeout: gettext("Kimi took too long to answer."),
    upstream_connection_error: gettext("Could not reach the Kimi service."),
    upstream_interrupted: gettext("The answer was cut off before it finished."),
    upstream_bad_response: gettext("Kimi sent a response this server could not read."),
  };
  return known[code] || fallback || gettext("Something went wrong.");
}

/** The error codes of a spending cap (services/billing/budgets.py): the chat keeps their notice on screen. */
export const BUDGET_CODES = new Set([
  "daily_budget_exceeded", "monthly_budget_exceeded", "group_budget_exceeded", "group_member_budget_exceeded",
]);

/** A spending cap's refusal: which cap, what is spent, what this message may cost, and when the cap resets. */
function budgetTexts(details) {
  if (details.cap === undefined) return {};
  const reset = details.resets_at
    ? new Date(details.resets_at).toLocaleString(document.documentElement.lang || undefined,
      { dateStyle: "medium", timeStyle: "short" })
    : "";
  const values = {
    cap: formatCredits(details.cap),
    spent: formatCredits(details.spent),
    cost: formatCredits(details.estimated_cost),
    group: details.group || "",
    reset,
  };
  const own = details.set_by === "user" ? " " + gettext("You set this cap yourself.") : "";
  const say = (text) => interpolate(text, values, true) + own;
  return {
    daily_budget_exceeded: say(gettext(
      "Daily spending cap reached: %(spent)s of %(cap)s credits spent today, and this message may cost up to %(cost)s. It resets on %(reset)s.")),
    monthly_budget_exceeded: say(gettext(
      "Monthly spending cap reached: %(spent)s of %(cap)s credits spent this month, and this message may cost up to %(cost)s. It resets on %(reset)s.")),
    group_budget_exceeded: say(gettext(
      "The monthly budget of the group “%(group)s” is used up: %(spent)s of %(cap)s credits, and this message may cost up to %(cost)s. It resets on %(reset)s.")),
    group_member_budget_exceeded: say(gettext(
      "Your monthly share in the group “%(group)s” is used up: %(spent)s of %(cap)s credits, and this message may cost up to %(cost)s. It resets on %(reset)s.")),
  };
}

/**
 * A credit amount as people read it, the same rule as Python's conversations/services/billing/credit_format.py
 * (both tested against tests/fixtures/credit_format_cases.json): "," between thousands, two decimals, up to four
 * for an amount between 0 and 1, rounded half away from zero; "—" for none. Worked on the decimal string with
 * BigInt, never a float: "1.005" is 1.01 here as on the server.
 */
export function formatCredits(value) {
  if (value === null || value === undefined || value === "") return "—";
  const match = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(value).trim());
  if (!match || (match[2] || "") + (match[3] || "") === "") return String(value);
  const [, sign, whole = "", fraction = "", exponent = "0"] = match;
  let magnitude = BigInt(whole + fraction || "0");
  let scale = fraction.length - Number(exponent); // the amount is magnitude / 10^scale
  if (scale < 0) {
    magnitude *= 10n ** BigInt(-scale);
    scale = 0;
  }
  const one = 10n ** BigInt(scale);
  const places = magnitude > 0n && magnitude < one ? 4 : 2;
  let units = magnitude; // in 10^-places
  if (scale > places) {
    const divisor = 10n ** BigInt(scale - places);
    units = magnitude / divisor;
    if ((magnitude % divisor) * 2n >= divisor) units += 1n;
  } else {
    units = magnitude * 10n ** BigInt(places - scale);
  }
  const base = 10n ** BigInt(places);
  const grouped = (units / base).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const decimals = (units % base).toString().padStart(places, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${sign === "-" && units > 0n ? "-" : ""}${grouped}.${decimals}`;
}
