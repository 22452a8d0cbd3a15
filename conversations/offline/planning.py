"""What the offline server will answer to a valid chat request: the pieces, where the output budget cuts them, the
usage (with cached prompt tokens), and partial mode.

- Budget: the limit sent in a field the provider reads, else the provider's or the model's documented default
  (1,024 on kimi-k2.ai and for the kimi-k2 family; 131,072 on kimi-k3), never above the provider's output maximum.
  Reasoning and answer share it, reasoning first, so a thinking model with a small budget stops with
  ``finish_reason: "length"`` and little or no content [notes §3 "Output budget"].
- Cache: Moonshot caches prompt prefixes automatically; ``prompt_cache_key`` keeps one conversation's prefixes
  together [notes §12]. A prefix of whole messages seen before, of at least ``CACHE_MIN_TOKENS``, is reported as
  ``cached_tokens`` (Moonshot), ``prompt_tokens_details.cached_tokens`` (gateways) or ``cache_read_input_tokens``
  (Anthropic format).
- Partial mode: with a last ``{"role": "assistant", "partial": true}`` message the answer continues that prefix and
  the reply leaves the prefix out [doc: partial].
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import orjson

from conversations.kimi.tokens import estimate_messages_locally
from conversations.offline import answers, directives, files
from conversations.offline.catalogue import spec_for, thinks
from conversations.offline.profiles import Profile
from conversations.offline.validation import prompt_tokens, requested_output

CACHE_MIN_TOKENS = 256  # the minimum cacheable prefix is about 256 tokens [?]


@dataclass
class Plan:
    reasoning: list[str]
    content: list[str]
    finish: str  # "stop" | "length"
    prompt_tokens: int
    cached_tokens: int
    budget: int

    @property
    def completion_tokens(self) -> int:
        return len(self.reasoning) + len(self.content)

    def usage(self, profile: Profile) -> dict:
        """The OpenAI-format usage object, with cached tokens where this provider puts them."""
        prompt, done = self.prompt_tokens, self.completion_tokens
        usage = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
        if self.cached_tokens:
            if profile.cached_tokens_field == "prompt_tokens_details":
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            else:
                usage["cached_tokens"] = self.cached_tokens
        return usage

    def anthropic_usage(self) -> dict:
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens}
        if self.cached_tokens:
            usage["cache_read_input_tokens"] = self.cached_tokens
        return usage


class PromptCache:
    """Prefixes of whole messages seen per (model, prompt_cache_key), as hashes."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def hit(self, model: str, key: str, messages: list[dict]) -> int:
        """Tokens of the longest cached prefix of ``messages``, then remember every prefix of them."""
        hashes, digest = [], hashlib.sha256()
        for message in messages:
            digest.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
            hashes.append(digest.copy().hexdigest())
        with self._lock:
            seen = self._seen.setdefault((model, key), set())
            longest = max((i + 1 for i, h in enumerate(hashes) if h in seen), default=0)
            seen.update(hashes)
        cached = estimate_messages_locally(messages[:longest]) if longest else 0
        return cached if cached >= CACHE_MIN_TOKENS else 0


def output_budget(body: dict, model: str, profile: Profile, anthropic: bool) -> int:
    requested = requested_output(body, profile, anthropic)
    budget = requested if isinstance(requested, int) else (profile.default_output or spec_for(model).default_output)
    return min(budget, profile.max_output) if profile.max_output else budget


def plan(
    body: dict,
    messages: list[dict],
    profile: Profile,
    found: directives.Directives,
    cache: PromptCache,
    *,
    anthropic: bool,
    last_user_text: str,
) -> Plan:
    model = str(body["model"])
    prefix = ""
    history = messages
    if messages and messages[-1].get("role") == "assistant" and (messages[-1].get("partial") or anthropic):
        # Partial mode; in the Anthropic format a final assistant message is a prefill, which means the same.
        prefix = answers_text(messages[-1].get("content"))
        history = messages[:-1]
    echo = directives.strip_markers(last_user_text) if found.echo else None
    if echo is not None and found.echo_context:
        echo = f"{echo}\n{files.context_report(messages)}"
    if echo is not None and found.echo_system:
        systems = [m["content"] for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str)]
        echo = "\n".join([echo, *(f"[system: {text}]" for text in systems)])
    if answers.asks_for_title(history):
        answer = answers.title_answer(history, thinks=thinks(model, body))
    else:
        answer = answers.build_answer(history, thinks=thinks(model, body), tokens=found.tokens, echo=echo)
    content = answer.content
    if prefix:
        content = answers.split_pieces(_continuation(answer.text, prefix))
    budget = output_budget(body, model, profile, anthropic)
    reasoning = list(answer.reasoning)
    finish = "stop"
    if len(reasoning) + len(content) > budget:
        reasoning = reasoning[:budget]
        content = content[: max(0, budget - len(reasoning))]
        finish = "length"
    key = body.get("prompt_cache_key") if not profile.gateway else None
    cached = cache.hit(model, key if isinstance(key, str) else "", messages)
    return Plan(reasoning, list(content), finish, prompt_tokens(body, messages, anthropic), cached, budget)


def _continuation(text: str, prefix: str) -> str:
    """What follows ``prefix`` in the answer the model would give; a prefix it would not have written is simply
    followed by that answer."""
    return text[len(prefix) :] if text.startswith(prefix) else " " + text


def answers_text(content) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")
