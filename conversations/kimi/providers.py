"""What each Kimi provider documents, so a request carries only fields that provider reads.

Sources are the keys of /work/shared/kimi-api-notes.md (§1, §3, §4, §12, §17): Moonshot's spec and docs, Ace Data
Cloud (S000–S002), kimi-k2.ai (S003). A gateway silently ignores a field it does not know, and an ignored output
limit means its default (1,024 on kimi-k2.ai) cuts the answer, so the field names matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Provider:
    name: str
    output_field: str  # the output-limit field it documents
    documents_thinking: bool  # the `thinking` object is in its docs
    documents_prompt_cache_key: bool
    documents_partial: bool  # partial mode (`"partial": true` on the last assistant message)
    is_gateway: bool
    default_output: int | None = None  # the output limit it applies when none is sent
    max_output: int | None = None  # the most it generates per answer
    context_windows: dict[str, int] = field(default_factory=dict)  # exact model id -> window, where it differs
    n_max: int | None = None  # None: the model's own rule
    stop_max: int = 5
    thinking_budget_min: int = 1024  # Anthropic-format `thinking.budget_tokens` floor
    files_api: bool = False  # POST /files with purpose=file-extract [doc: files]; gateways document none


MOONSHOT = Provider(
    "moonshot",
    output_field="max_completion_tokens",  # `max_tokens` is deprecated [doc: spec]
    documents_thinking=True,
    documents_prompt_cache_key=True,
    documents_partial=True,
    is_gateway=False,
    files_api=True,
)
MOONSHOT_CN = Provider(**{**MOONSHOT.__dict__, "name": "moonshot-cn"})
ACEDATA = Provider(
    "acedata",
    output_field="max_tokens",  # S002's body lists only max_tokens
    documents_thinking=False,
    documents_prompt_cache_key=False,
    documents_partial=False,
    is_gateway=True,
    n_max=128,  # S002: 1 <= n <= 128
)
KIMI_K2_AI = Provider(
    "kimi-k2.ai",
    output_field="max_tokens",
    documents_thinking=False,
    documents_prompt_cache_key=False,
    documents_partial=False,
    is_gateway=True,
    default_output=1024,  # S003: max_tokens default 1024
    max_output=8192,  # S003 "Token Limits": maximum output tokens 8,192
    context_windows={"kimi-k2": 128_000, "kimi-k2-0905": 256_000},  # S003 "Available Models"
    stop_max=4,  # S003: up to 4 stop sequences
)
PROVIDERS = {p.name: p for p in (MOONSHOT, MOONSHOT_CN, ACEDATA, KIMI_K2_AI)}


def provider_named(name: str | Provider | None) -> Provider:
    if isinstance(name, Provider):
        return name
    if not name:
        return MOONSHOT
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown Kimi provider {name!r}; one of {', '.join(PROVIDERS)}") from None


def provider_for_url(base_url: str) -> Provider:
    """The provider a base URL belongs to; anything unknown (the offline server, a proxy) is Moonshot-like."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host.endswith("moonshot.cn"):
        return MOONSHOT_CN
    if host.endswith("acedata.cloud"):
        return ACEDATA
    if host == "kimi-k2.ai" or host.endswith(".kimi-k2.ai"):
        return KIMI_K2_AI
    return MOONSHOT
