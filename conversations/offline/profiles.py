"""Provider profiles of the offline server: which endpoints exist, which models are served, which output-limit field
is read, the defaults and headers, each as the provider documents it (/work/shared/kimi-api-notes.md §1, §2, §16,
seeds 000-004).

``moonshot`` is the default, so ``make run`` and every existing test meet Moonshot's rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from conversations.offline.catalogue import spec_for

# The August 2026 spec's chat models [doc: spec].
MOONSHOT_SPEC_MODELS = [
    "kimi-k3",
    "kimi-k2.7-code",
    "kimi-k2.7-code-highspeed",
    "kimi-k2.6",
    "kimi-k2.5",
    "moonshot-v1-8k",
    "moonshot-v1-32k",
    "moonshot-v1-128k",
    "moonshot-v1-auto",
    "moonshot-v1-8k-vision-preview",
    "moonshot-v1-32k-vision-preview",
    "moonshot-v1-128k-vision-preview",
]
# kimi-k2 ids left Moonshot's spec in June 2026 (a 404 there) but the gateways still serve them; the offline Moonshot
# profile keeps them so the app's tests and `make run` can use a fast model without reasoning.
LEGACY_K2_MODELS = [
    "kimi-k2-thinking-turbo",
    "kimi-k2-thinking",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
    "kimi-k2",
    "kimi-k2-0905",
]
ACEDATA_MODELS = [  # S002's enum
    "kimi-k2-thinking-turbo",
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
]


@dataclass(frozen=True)
class Profile:
    name: str
    base_path: str  # what follows host:port in the provider's base URL
    endpoints: frozenset[str]  # "models", "chat", "messages", "balance", "tokenizer", "credits", "files"
    models: tuple[str, ...]
    output_fields: tuple[str, ...]  # the output-limit fields it reads; others are ignored like any unknown field
    models_listing: str  # "spec": Moonshot's fields; "basic": id/object/owned_by
    gateway: bool
    default_output: int | None = None  # overrides the model's own default
    max_output: int | None = None  # generation stops here whatever was asked
    windows: dict[str, int] = field(default_factory=dict)
    n_max: int | None = None  # overrides the model's own limit (not a fixed n)
    temperature_max: float = 1.0
    stop_max: int = 5
    partial: bool = True  # partial mode documented
    usage_in_complete: bool = True  # S002's example reply has no usage
    cached_tokens_field: str = "cached_tokens"  # or "prompt_tokens_details"

    def window(self, model: str) -> int:
        return self.windows.get(model) or spec_for(model).window

    def headers(self, request_id: str, served: int, credits: int, rate_limit: int) -> dict[str, str]:
        remaining = max(0, rate_limit - 1 - served % rate_limit)
        limits = {
            "X-RateLimit-Limit": str(rate_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 60),  # unix seconds [doc: S003]
        }
        if self.name == "acedata":
            return {"x-trace-id": request_id}
        if self.name == "kimi-k2.ai":
            return {"x-request-id": request_id, **limits, "X-Credits-Remaining": str(credits)}
        # Moonshot's request id [seen]; X-Credits-Remaining is kimi-k2.ai's, kept here because the app's balance
        # fallback is tested against the default profile.
        return {
            "Msh-Request-Id": request_id,
            "x-msh-trace-id": request_id,
            "x-request-id": request_id,
            **limits,
            "X-Credits-Remaining": str(credits),
        }


_MOONSHOT = dict(
    base_path="/v1",
    endpoints=frozenset({"models", "chat", "messages", "balance", "tokenizer", "files"}),
    models=tuple(MOONSHOT_SPEC_MODELS + LEGACY_K2_MODELS),
    output_fields=("max_completion_tokens", "max_tokens"),  # max_tokens deprecated but read [doc: spec]
    models_listing="spec",
    gateway=False,
)
PROFILES = {
    "moonshot": Profile("moonshot", **_MOONSHOT),
    "moonshot-cn": Profile("moonshot-cn", **_MOONSHOT),
    "acedata": Profile(
        "acedata",
        base_path="/kimi",
        endpoints=frozenset({"chat"}),  # /models undocumented [?]
        models=tuple(ACEDATA_MODELS),
        output_fields=("max_tokens",),
        models_listing="basic",
        gateway=True,
        n_max=128,
        partial=False,
        usage_in_complete=False,
        cached_tokens_field="prompt_tokens_details",
    ),
    "kimi-k2.ai": Profile(
        "kimi-k2.ai",
        base_path="/api/v1",
        endpoints=frozenset({"models", "chat", "messages", "credits"}),
        models=("kimi-k2", "kimi-k2-0905"),
        output_fields=("max_tokens",),
        models_listing="basic",
        gateway=True,
        default_output=1024,  # S003
        max_output=8192,  # S003 "Token Limits"
        windows={"kimi-k2": 128_000, "kimi-k2-0905": 256_000},
        temperature_max=2.0,  # S003 documents 0-2 on /chat/completions (0-1 on /messages)
        stop_max=4,
        partial=False,
        cached_tokens_field="prompt_tokens_details",
    ),
}


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown offline profile {name!r}; one of {', '.join(PROFILES)}") from None
