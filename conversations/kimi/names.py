"""How people read model ids: a display name per id, and the family that groups its aliases and snapshots
("kimi-k2", "kimi-k2-0905-preview" and "kimi-k2-turbo-preview" are all Kimi K2). Name-based, like params.rules_for:
an id this does not know still gets a readable name."""

from __future__ import annotations

import re

_WORDS = {"kimi": "Kimi", "moonshot": "Moonshot", "v1": "v1", "auto": "Auto"}
# Tokens that tell snapshots, speeds and window sizes of one model apart: left out of the family name.
_VARIANT = re.compile(r"^(\d{4}|preview|turbo|highspeed|instruct|latest|auto|\d+k)$")


def _word(token: str) -> str:
    if token in _WORDS:
        return _WORDS[token]
    if re.fullmatch(r"k\d+(\.\d+)?", token) or re.fullmatch(r"\d+k", token):
        return token.upper()
    return token.capitalize()


def display_name(model: str) -> str:
    """kimi-k2.6 → "Kimi K2.6"; moonshot-v1-8k-vision-preview → "Moonshot v1 8K Vision (preview)"."""
    tokens = [t for t in model.strip().lower().split("-") if t]
    preview = "preview" in tokens
    name = " ".join(_word(t) for t in tokens if t != "preview")
    return f"{name} (preview)" if preview and name else (name or model)


def family_name(model: str) -> str:
    """The model line an id belongs to: kimi-k2-thinking-turbo → "Kimi K2 Thinking"; moonshot-v1-32k → "Moonshot v1"."""
    tokens = [t for t in model.strip().lower().split("-") if t]
    kept = [t for t in tokens if not _VARIANT.match(t)]
    return " ".join(_word(t) for t in kept) or display_name(model)
