"""The models the offline server knows and what each accepts, as the real API documents it.

Written apart from the client's ``conversations/kimi/params.py`` on purpose: a test double that shared the client's
rules would agree with every bug in them. Sources are the keys of /work/shared/kimi-api-notes.md §3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

K2_WINDOW = 262_144
SAMPLING_PARAMS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True)
class ModelSpec:
    window: int
    # Parameters absent from the model's schema: any value is refused (k3, k2.7 [doc: params, spec]).
    refused_params: tuple[str, ...] = ()
    # Fixed parameters: any value but this one is refused (k2.5/k2.6 [doc: params]); temperature by thinking.
    fixed_temperature: tuple[float, float] | None = None  # (thinking, not thinking)
    fixed_top_p: float | None = None
    fixed_n: int | None = None
    n_max: int = 5
    default_temperature: float = 0.6
    thinking: str = "none"  # "none" (field refused), "toggle", "always" (field refused), "enabled_keep_all"
    thinking_keep: bool = False  # takes thinking.keep
    preserved_thinking: bool = False  # history must carry reasoning_content
    reasoning_efforts: tuple[str, ...] = ()
    default_output: int = 1024  # "e.g. 1024" [doc: May spec]
    max_output: int | None = None
    image_in: bool = False
    video_in: bool = False


_WINDOW = re.compile(r"-(\d+)k\b")


def spec_for(model: str) -> ModelSpec:
    if model.startswith("kimi-k3"):
        return ModelSpec(
            window=1_000_000,
            refused_params=SAMPLING_PARAMS,
            thinking="always",
            preserved_thinking=True,
            reasoning_efforts=("low", "high", "max"),
            default_output=131_072,
            max_output=1_048_576,
            image_in=True,
        )
    if model.startswith("kimi-k2.7"):
        # Default and cap undocumented [?]: the k2.6 examples' 32K stands in.
        return ModelSpec(
            window=K2_WINDOW,
            refused_params=SAMPLING_PARAMS,
            thinking="enabled_keep_all",
            preserved_thinking=True,
            default_output=32_768,
        )
    if model.startswith(("kimi-k2.5", "kimi-k2.6")):
        return ModelSpec(
            window=K2_WINDOW,
            fixed_temperature=(1.0, 0.6),
            fixed_top_p=0.95,
            fixed_n=1,
            thinking="toggle",
            thinking_keep=model.startswith("kimi-k2.6"),
            default_output=32_768,  # undocumented [?]; official examples use 32K
            image_in=True,
            video_in=True,
        )
    if "-thinking" in model:
        return ModelSpec(window=K2_WINDOW, thinking="always", default_temperature=1.0)
    if model.startswith("moonshot-v1"):
        match = _WINDOW.search(model)
        return ModelSpec(
            window=int(match.group(1)) * 1024 if match else 131_072,
            default_temperature=0.0,  # so n > 1 needs a temperature [doc: spec]
            image_in="vision" in model,
        )
    if model in {"kimi-k2", "kimi-k2-0711-preview"}:
        return ModelSpec(window=131_072)
    return ModelSpec(window=K2_WINDOW)


def thinks(model: str, body: dict) -> bool:
    spec = spec_for(model)
    if spec.thinking in {"always", "enabled_keep_all"}:
        return True
    if spec.thinking == "toggle":
        thinking = body.get("thinking")
        return not (isinstance(thinking, dict) and thinking.get("type") == "disabled")
    return False
