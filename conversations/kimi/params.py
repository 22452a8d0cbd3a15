"""Which settings each Kimi model accepts, checked before any request leaves the server.

Moonshot answers 400 to a parameter a model does not take (or any value but the fixed one), and its temperature
range is [0, 1] rather than OpenAI's [0, 2], so a request is validated here against the chosen model and provider and
only what both accept is sent. Rules by family, with sources in /work/shared/kimi-api-notes.md §3 (see
docs/kimi-client.md for the table):

- kimi-k3*: temperature 1.0, top_p 0.95, n 1 fixed (not in its schema); always thinks, no ``thinking`` field;
  ``reasoning_effort`` low/high/max (default max); Preserved Thinking always on; 1M context.
- kimi-k2.7*: the same fixed values; always thinks (``"disabled"`` is an error, so no field is sent); no
  ``reasoning_effort``; Preserved Thinking always on; 256K context.
- kimi-k2.5 / kimi-k2.6: temperature fixed (1.0 thinking, 0.6 not), top_p 0.95, n 1; thinking a toggle, enabled by
  default; k2.6 also takes ``keep: "all"`` (Preserved Thinking).
- *-thinking*: always thinking; temperature and top_p in [0, 1]; n 1–5.
- other kimi-k2*, moonshot-v1*: temperature and top_p in [0, 1], n 1–5, no thinking.
- unknown ids: generic OpenAI-compatible rules (temperature in [0, 2]), no thinking.

Thinking switched off explicitly for an always-thinking model is an error (the user asked for something the model
cannot do); thinking switched on for a model without thinking is ignored (there is nothing to switch on, and the
settings panel does not offer it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conversations.kimi.errors import ContextTooLong, InvalidParameter
from conversations.kimi.providers import Provider, provider_named
from conversations.kimi.tools import check_tool_choice, check_tools

NEAR_ZERO_TEMPERATURE = 0.01  # Moonshot: "temperature 0 or close to 0 (e.g. 0.001)" allows only n = 1
MAX_N = 128
REASONING_EFFORTS = ("low", "high", "max")


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]  # {"role", "content", "reasoning"?}; reasoning only on assistant messages
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # the output budget; sent as the provider's field (see output_budget)
    json_mode: bool = False
    thinking: bool | None = None  # None: the model's default
    n: int = 1
    extra: dict = field(default_factory=dict)  # provider fields passed through untouched (e.g. "stop")
    reasoning_effort: str | None = None  # kimi-k3: "low" | "high" | "max"; None: the model's default (max)
    prompt_cache_key: str | None = None  # a stable per-conversation id; sent where the provider documents it
    continue_from: str | None = None  # partial mode: the answer so far; the reply is only what follows it
    keep_reasoning: bool = False  # kimi-k2.6: thinking.keep = "all" (earlier reasoning is read again)
    tools: list[dict] | None = None  # function tools and/or the built-in $web_search (kimi/tools.py)
    tool_choice: str | dict | None = None  # "auto" | "none" | "required" | a named function; None: not sent


@dataclass(frozen=True)
class ModelRules:
    family: str
    temperature_range: tuple[float, float] = (0.0, 1.0)
    temperature_fixed: float | None = None  # fixed regardless of thinking
    temperature_fixed_by_thinking: tuple[float, float] | None = None  # (thinking on, thinking off)
    top_p_fixed: float | None = None
    n_fixed: int | None = None
    n_max: int = MAX_N
    thinking: str = "none"  # "toggle" | "always" | "none"
    thinking_keep: bool = False  # takes thinking.keep = "all"
    preserved_thinking: bool = False  # every earlier assistant turn must carry reasoning_content
    reasoning_efforts: tuple[str, ...] = ()
    context_window: int | None = None
    default_output: int | None = None  # what the API applies when no limit is sent (None: undocumented)
    max_output: int | None = None  # the largest limit the API takes (None: the context window)
    image_in: bool = False  # name-based fallbacks for GET /models' supports_image_in / supports_video_in
    video_in: bool = False


@dataclass(frozen=True)
class ResolvedParams:
    """What will be sent, after validation: None means "do not send this field"."""

    temperature: float | None
    top_p: float | None
    n: int | None
    max_tokens: int | None
    json_mode: bool
    thinking: bool | None  # None: do not send the toggle (no thinking, always thinking, or the gateway default)
    thinks: bool  # whether reasoning is expected in the answer
    output_field: str = "max_completion_tokens"
    reasoning_effort: str | None = None
    prompt_cache_key: str | None = None
    thinking_keep: bool = False
    preserve_reasoning: bool = False  # add reasoning_content ("" when none) to every assistant turn
    continue_from: str | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None


_K2_CONTEXT = 262_144
_K2_SAMPLING_DEFAULT_OUTPUT = 1024  # May spec: max_tokens default "e.g. 1024" for the kimi-k2 family
_WINDOW_SUFFIX = re.compile(r"-(\d+)k\b")


def rules_for(model: str, provider: Provider | str | None = None) -> ModelRules:
    rules = _family_rules(model.strip().lower())
    prov = provider_named(provider)
    window = prov.context_windows.get(model.strip().lower())
    changes: dict = {}
    if window:
        changes["context_window"] = window
    if prov.n_max and rules.n_fixed is None:
        changes["n_max"] = prov.n_max
    if prov.default_output:
        changes["default_output"] = prov.default_output
    if prov.max_output:
        changes["max_output"] = min(prov.max_output, rules.max_output or prov.max_output)
    return _replace(rules, changes) if changes else rules


def _replace(rules: ModelRules, changes: dict) -> ModelRules:
    return ModelRules(**{**rules.__dict__, **changes})


def _family_rules(name: str) -> ModelRules:
    fixed = {"temperature_fixed": 1.0, "top_p_fixed": 0.95, "n_fixed": 1}
    if name.startswith("kimi-k3"):
        return ModelRules(
            family="kimi-k3",
            **fixed,
            thinking="always",
            preserved_thinking=True,
            reasoning_efforts=REASONING_EFFORTS,
            context_window=1_000_000,
            default_output=131_072,
            max_output=1_048_576,
        )
    if name.startswith("kimi-k2.7"):
        return ModelRules(
            family="kimi-k2.7", **fixed, thinking="always", preserved_thinking=True, context_window=_K2_CONTEXT
        )
    if name.startswith(("kimi-k2.5", "kimi-k2.6")):
        return ModelRules(
            family="kimi-k2.5/k2.6",
            temperature_fixed_by_thinking=(1.0, 0.6),
            top_p_fixed=0.95,
            n_fixed=1,
            thinking="toggle",
            thinking_keep=name.startswith("kimi-k2.6"),
            context_window=_K2_CONTEXT,
            image_in=True,
            video_in=True,
        )
    if "-thinking" in name:
        return ModelRules(
            family="thinking",
            thinking="always",
            n_max=5,
            context_window=_K2_CONTEXT,
            default_output=_K2_SAMPLING_DEFAULT_OUTPUT,
        )
    if name.startswith(("kimi-", "moonshot-")):
        return ModelRules(
            family="kimi",
            n_max=5,
            context_window=_kimi_window(name),
            default_output=_K2_SAMPLING_DEFAULT_OUTPUT if name.startswith("kimi-k2") else None,
            image_in="vision" in name,
        )
    return ModelRules(family="openai-compatible", temperature_range=(0.0, 2.0))


def _kimi_window(name: str) -> int:
    match = _WINDOW_SUFFIX.search(name)  # moonshot-v1-8k / -32k / -128k
    if match:
        return int(match.group(1)) * 1024
    if name in {"kimi-k2", "kimi-k2-0711-preview"}:
        return 131_072
    return _K2_CONTEXT if name.startswith("kimi-k2") else 131_072


# --- output budget -------------------------------------------------------------------------------------------------

# What the app asks for when the user set no limit. Never the API's own default: that is 1,024 for the k2 family and
# on kimi-k2.ai, which cuts an ordinary answer, and reasoning spends the same budget first [notes §3 "Output budget"].
RECOMMENDED_OUTPUT_THINKING = 32_768  # "use >= 16-32K" for thinking models; official k2.6 examples use 32K
RECOMMENDED_OUTPUT = 8_192


def budget_margin(window: int) -> int:
    """Room left for the difference between the local token estimate and the provider's count."""
    return max(256, window // 64)


def recommended_output(model: str, provider: Provider | str | None = None) -> int:
    rules = rules_for(model, provider)
    if rules.family == "kimi-k3":
        return 131_072  # its documented default [doc: spec]
    return RECOMMENDED_OUTPUT_THINKING if rules.thinking != "none" else RECOMMENDED_OUTPUT


def output_budget(model: str, setting: int | None, prompt_tokens: int, provider: Provider | str | None = None) -> int:
    """The output limit to send and reserve credits for: the user's setting (else a full answer's worth for this
    model), no more than the provider generates per answer, and no more than the context window leaves after the
    prompt and a safety margin. Raises ContextTooLong when the prompt leaves no room at all."""
    rules = rules_for(model, provider)
    wanted = setting or recommended_output(model, provider)
    if rules.max_output:
        wanted = min(wanted, rules.max_output)
    if rules.context_window:
        room = rules.context_window - max(0, prompt_tokens) - budget_margin(rules.context_window)
        if room < 1:
            raise ContextTooLong(
                f"The conversation (about {prompt_tokens:,} tokens) leaves no room for an answer in {model}'s "
                f"context window of {rules.context_window:,} tokens.",
                detail=f"prompt {prompt_tokens} window {rules.context_window}",
            )
        wanted = min(wanted, room)
    return max(1, wanted)


# --- capabilities --------------------------------------------------------------------------------------------------


def model_capabilities(model: str, info: dict | None = None, provider: Provider | str | None = None) -> dict:
    """What the settings panel may offer for ``model``: ranges, fixed values, the thinking switch, vision.

    ``info`` is the model's entry from GET /models (``KimiClient.model_info()``): where the provider sends
    ``context_length`` / ``supports_*`` they win over the name-based rules here."""
    rules = rules_for(model, provider)
    info = info or {}
    if rules.temperature_fixed_by_thinking:
        on, off = rules.temperature_fixed_by_thinking
        temperature: dict = {"fixed": on, "fixed_without_thinking": off}
    elif rules.temperature_fixed is not None:
        temperature = {"fixed": rules.temperature_fixed}
    else:
        low, high = rules.temperature_range
        temperature = {"min": low, "max": high}
    window = _positive_int(info.get("context_length")) or rules.context_window
    thinking = rules.thinking
    reasoning = info.get("supports_reasoning")
    if reasoning is False:
        thinking = "none"
    elif reasoning is True and thinking == "none":
        thinking = "always"
    image = info.get("supports_image_in")
    video = info.get("supports_video_in")
    max_output = min(x for x in (rules.max_output, window) if x) if (rules.max_output or window) else None
    return {
        "model": model,
        "family": rules.family,
        "temperature": temperature,
        "top_p": {"fixed": rules.top_p_fixed} if rules.top_p_fixed is not None else {"min": 0.0, "max": 1.0},
        "n": {"fixed": rules.n_fixed} if rules.n_fixed is not None else {"min": 1, "max": rules.n_max},
        "thinking": thinking,
        "thinking_default": thinking != "none",
        "keep_reasoning": rules.thinking_keep,
        "reasoning_effort": (
            {"choices": list(rules.reasoning_efforts), "default": "max"} if rules.reasoning_efforts else None
        ),
        "json_mode": True,
        "max_tokens": {"min": 1, "max": max_output, "default": recommended_output(model, provider)},
        "context_window": window,
        "image_in": image if isinstance(image, bool) else rules.image_in,
        "video_in": video if isinstance(video, bool) else rules.video_in,
        "web_search": supports_web_search(model, provider),
        "source": "models_endpoint" if info else "name",
    }


def supports_web_search(model: str, provider: Provider | str | None = None) -> bool:
    """The built-in $web_search is Moonshot's [doc: websearch]; gateways do not document it (S000-S003), and no
    source says the vision previews take tools [?]."""
    name = model.strip().lower()
    if provider_named(provider).is_gateway or "vision" in name:
        return False
    return rules_for(model, provider).family != "openai-compatible"


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def resolve_params(request: ChatRequest, provider: Provider | str | None = None) -> ResolvedParams:
    """Validate ``request`` against its model and provider; raise InvalidParameter with a message a user can act
    on. ``provider``: a name from providers.PROVIDERS, or None for Moonshot."""
    model = request.model
    if not model or not model.strip():
        raise InvalidParameter("Pick a model.")
    if not request.messages:
        raise InvalidParameter("There is no message to send.")
    prov = provider_named(provider)
    rules = rules_for(model, prov)

    thinks = _resolve_thinking(model, rules, request.thinking)
    temperature = _resolve_temperature(model, rules, request.temperature, thinks)
    top_p = _resolve_fixed_or_range(model, "top_p", request.top_p, rules.top_p_fixed, (0.0, 1.0))
    n = _resolve_n(model, rules, request.n)
    if n and n > 1 and temperature is not None and temperature < NEAR_ZERO_TEMPERATURE:
        raise InvalidParameter("More than one answer (n > 1) needs a temperature above 0.")
    if n and n > 1 and temperature is None and rules.family == "kimi" and model.lower().startswith("moonshot-v1"):
        # moonshot-v1's default temperature is 0.0 [doc: spec]: n > 1 without a temperature is refused upstream.
        raise InvalidParameter("More than one answer (n > 1) needs a temperature above 0.")
    max_tokens = request.max_tokens
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidParameter("The answer length limit (max_tokens) must be a whole number of at least 1.")
        if rules.context_window and max_tokens > rules.context_window:
            raise InvalidParameter(
                f"The answer length limit ({max_tokens}) exceeds {model}'s context window of {rules.context_window}."
            )
    effort = request.reasoning_effort
    if effort is not None:
        if not rules.reasoning_efforts:
            raise InvalidParameter(f"{model} does not take a reasoning effort setting.")
        if effort not in rules.reasoning_efforts:
            raise InvalidParameter(f"The reasoning effort must be one of {', '.join(rules.reasoning_efforts)}.")
    keep = bool(request.keep_reasoning) and thinks
    if request.keep_reasoning and not rules.thinking_keep:
        raise InvalidParameter(f"{model} does not take the keep-reasoning setting.")
    continue_from = request.continue_from
    if continue_from is not None:
        if not isinstance(continue_from, str) or not continue_from:
            raise InvalidParameter("There is no answer to continue.")
        if request.json_mode:
            raise InvalidParameter("Continuing an answer is not available in JSON mode.")  # [doc: partial]
        if not prov.documents_partial:
            raise InvalidParameter("Continuing an answer is not available with this Kimi provider.")
    tools = check_tools(request.tools) if request.tools is not None else None
    tool_choice = check_tool_choice(request.tool_choice, tools, family=rules.family, thinks=thinks)
    thinking: bool | None = None
    if rules.thinking == "toggle":
        # Gateways that do not document the field pass it on at best: send it only when it changes something.
        thinking = thinks if (prov.documents_thinking or not thinks or keep) else None
    return ResolvedParams(
        temperature=temperature,
        top_p=top_p,
        n=n,
        max_tokens=max_tokens,
        json_mode=bool(request.json_mode),
        thinking=thinking,
        thinks=thinks,
        output_field=prov.output_field,
        reasoning_effort=effort,
        prompt_cache_key=request.prompt_cache_key if prov.documents_prompt_cache_key else None,
        thinking_keep=keep,
        preserve_reasoning=thinks and (rules.preserved_thinking or keep),
        continue_from=continue_from,
        tools=tools,
        tool_choice=tool_choice,
    )


def _resolve_thinking(model: str, rules: ModelRules, wanted: bool | None) -> bool:
    if rules.thinking == "always":
        if wanted is False:
            raise InvalidParameter(f"{model} always thinks before answering; thinking cannot be switched off.")
        return True
    if rules.thinking == "toggle":
        return True if wanted is None else bool(wanted)
    return False


def _resolve_temperature(model: str, rules: ModelRules, value: float | None, thinks: bool) -> float | None:
    fixed = rules.temperature_fixed
    if rules.temperature_fixed_by_thinking:
        fixed = rules.temperature_fixed_by_thinking[0 if thinks else 1]
    return _resolve_fixed_or_range(model, "temperature", value, fixed, rules.temperature_range)


def _resolve_fixed_or_range(
    model: str, name: str, value: float | None, fixed: float | None, allowed: tuple[float, float]
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameter(f"{name} must be a number.")
    if fixed is not None:
        if abs(value - fixed) > 1e-9:
            raise InvalidParameter(f"{model} uses a fixed {name} of {fixed:g}; it cannot be changed.")
        return None  # the provider applies the fixed value itself; sending it only risks a 400
    low, high = allowed
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be between {low:g} and {high:g} for {model} (got {value:g}).")
    return float(value)


def _resolve_n(model: str, rules: ModelRules, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter("The number of answers (n) must be a whole number of at least 1.")
    if rules.n_fixed is not None:
        if value != rules.n_fixed:
            raise InvalidParameter(f"{model} gives exactly {rules.n_fixed} answer per request.")
        return None
    if value > rules.n_max:
        raise InvalidParameter(f"The number of answers (n) must be at most {rules.n_max} for {model}.")
    return None if value == 1 else value
