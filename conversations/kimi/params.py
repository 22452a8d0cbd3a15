"""Which settings each Kimi model accepts, checked before any request leaves the server.

Moonshot answers 400 to any value other than the fixed one for a fixed parameter, and its temperature range is
[0, 1] rather than OpenAI's [0, 2], so a request is validated here against the chosen model and only the parameters
the model accepts are sent. Rules by family (see docs/kimi-client.md):

- kimi-k2.5 / kimi-k2.6: temperature fixed (1.0 thinking, 0.6 not), top_p fixed 0.95, n fixed 1; thinking is a
  toggle sent as ``thinking: {type: enabled|disabled}``, enabled by default. Fixed values are never sent.
- kimi-k2.7*: temperature fixed 1.0; thinking toggle, enabled by default.
- kimi-k3*: temperature fixed 1.0; always thinking.
- *-thinking*: always thinking; temperature and top_p in [0, 1].
- other kimi-* / moonshot-*: temperature and top_p in [0, 1], no thinking.
- unknown ids: generic OpenAI-compatible rules (temperature in [0, 2]), no thinking.

Thinking switched off explicitly for an always-thinking model is an error (the user asked for something the model
cannot do); thinking switched on for a model without thinking is ignored (there is nothing to switch on, and the
settings panel does not offer it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conversations.kimi.errors import InvalidParameter

NEAR_ZERO_TEMPERATURE = 0.01  # Moonshot: "temperature 0 or close to 0 (e.g. 0.001)" allows only n = 1
MAX_N = 128


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]  # {"role", "content", "reasoning"?}; reasoning only on assistant messages
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False
    thinking: bool | None = None  # None: the model's default
    n: int = 1
    extra: dict = field(default_factory=dict)  # provider fields passed through untouched (e.g. "stop")


@dataclass(frozen=True)
class ModelRules:
    family: str
    temperature_range: tuple[float, float] = (0.0, 1.0)
    temperature_fixed: float | None = None  # fixed regardless of thinking
    temperature_fixed_by_thinking: tuple[float, float] | None = None  # (thinking on, thinking off)
    top_p_fixed: float | None = None
    n_fixed: int | None = None
    thinking: str = "none"  # "toggle" | "always" | "none"
    context_window: int | None = None


@dataclass(frozen=True)
class ResolvedParams:
    """What will be sent, after validation: None means "do not send this field"."""

    temperature: float | None
    top_p: float | None
    n: int | None
    max_tokens: int | None
    json_mode: bool
    thinking: bool | None  # None: do not send the toggle (no thinking, or always thinking)
    thinks: bool  # whether reasoning is expected in the answer


_K2_CONTEXT = 262_144
_WINDOW_SUFFIX = re.compile(r"-(\d+)k\b")


def rules_for(model: str) -> ModelRules:
    name = model.strip().lower()
    if name.startswith(("kimi-k2.5", "kimi-k2.6")):
        return ModelRules(
            family="kimi-k2.5/k2.6",
            temperature_fixed_by_thinking=(1.0, 0.6),
            top_p_fixed=0.95,
            n_fixed=1,
            thinking="toggle",
            context_window=_K2_CONTEXT,
        )
    if name.startswith("kimi-k2.7"):
        return ModelRules(family="kimi-k2.7", temperature_fixed=1.0, thinking="toggle", context_window=_K2_CONTEXT)
    if name.startswith("kimi-k3"):
        return ModelRules(family="kimi-k3", temperature_fixed=1.0, thinking="always", context_window=1_000_000)
    if "-thinking" in name:
        return ModelRules(family="thinking", thinking="always", context_window=_K2_CONTEXT)
    if name.startswith(("kimi-", "moonshot-")):
        return ModelRules(family="kimi", context_window=_kimi_window(name))
    return ModelRules(family="openai-compatible", temperature_range=(0.0, 2.0))


def _kimi_window(name: str) -> int:
    match = _WINDOW_SUFFIX.search(name)  # moonshot-v1-8k / -32k / -128k
    if match:
        return int(match.group(1)) * 1024
    if name in {"kimi-k2", "kimi-k2-0711-preview"}:
        return 131_072
    return _K2_CONTEXT if name.startswith("kimi-k2") else 131_072


def model_capabilities(model: str) -> dict:
    """What the settings panel may offer for ``model``: ranges, fixed values and the thinking switch."""
    rules = rules_for(model)
    if rules.temperature_fixed_by_thinking:
        on, off = rules.temperature_fixed_by_thinking
        temperature: dict = {"fixed": on, "fixed_without_thinking": off}
    elif rules.temperature_fixed is not None:
        temperature = {"fixed": rules.temperature_fixed}
    else:
        low, high = rules.temperature_range
        temperature = {"min": low, "max": high}
    return {
        "model": model,
        "family": rules.family,
        "temperature": temperature,
        "top_p": {"fixed": rules.top_p_fixed} if rules.top_p_fixed is not None else {"min": 0.0, "max": 1.0},
        "n": {"fixed": rules.n_fixed} if rules.n_fixed is not None else {"min": 1, "max": MAX_N},
        "thinking": rules.thinking,
        "thinking_default": rules.thinking != "none",
        "json_mode": True,
        "max_tokens": {"min": 1, "max": rules.context_window},
        "context_window": rules.context_window,
    }


def resolve_params(request: ChatRequest) -> ResolvedParams:
    """Validate ``request`` against its model; raise InvalidParameter with a message a user can act on."""
    model = request.model
    if not model or not model.strip():
        raise InvalidParameter("Pick a model.")
    if not request.messages:
        raise InvalidParameter("There is no message to send.")
    rules = rules_for(model)

    thinks = _resolve_thinking(model, rules, request.thinking)
    temperature = _resolve_temperature(model, rules, request.temperature, thinks)
    top_p = _resolve_fixed_or_range(model, "top_p", request.top_p, rules.top_p_fixed, (0.0, 1.0))
    n = _resolve_n(model, rules, request.n)
    if n and n > 1 and temperature is not None and temperature < NEAR_ZERO_TEMPERATURE:
        raise InvalidParameter("More than one answer (n > 1) needs a temperature above 0.")
    max_tokens = request.max_tokens
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidParameter("The answer length limit (max_tokens) must be a whole number of at least 1.")
        if rules.context_window and max_tokens > rules.context_window:
            raise InvalidParameter(
                f"The answer length limit ({max_tokens}) exceeds {model}'s context window of {rules.context_window}."
            )
    return ResolvedParams(
        temperature=temperature,
        top_p=top_p,
        n=n,
        max_tokens=max_tokens,
        json_mode=bool(request.json_mode),
        thinking=thinks if rules.thinking == "toggle" else None,
        thinks=thinks,
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
    if value > MAX_N:
        raise InvalidParameter(f"The number of answers (n) must be at most {MAX_N}.")
    return None if value == 1 else value
