"""Deterministic, realistic-looking answers for the offline Kimi-compatible server.

The same messages always give the same answer (seeded by a hash of the messages), so tests and screenshots are
stable. Answers are markdown with a heading, a list, a code block and some Chinese, which exercises the renderer.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

import orjson

_WIDE = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
# One piece ≈ one token: a CJK character, or a word with the whitespace before it, or trailing whitespace.
_PIECE = re.compile(rf"\s*[{_WIDE}]|\s*[^\s{_WIDE}]+|\s+")

_TOPICS = [
    ("Binary search", "binary_search", "halves the search range at every step"),
    ("Rate limiting", "token_bucket", "refills a bucket of tokens at a steady pace"),
    ("Caching", "memoize", "keeps recent results so repeated work is skipped"),
    ("Unicode text", "normalize", "treats characters, not bytes, as the unit of text"),
    ("Streaming responses", "stream_pieces", "sends the answer piece by piece as it is produced"),
    ("Retries with backoff", "backoff_delay", "waits longer after every failure, with a little randomness"),
]
_INTROS = [
    "Here is a short overview, followed by a small example you can run.",
    "Good question. The idea is simple once you see the moving parts.",
    "Let me break this down into the pieces that matter in practice.",
]
_POINTS = [
    ("Correctness", "check the edge cases first: empty input, one element, duplicates"),
    ("Performance", "measure before optimising; the slow part is rarely where you expect"),
    ("Readability", "name things after what they mean, not after how they work"),
    ("Testing", "a test that cannot fail proves nothing, so make each one able to fail"),
    ("Robustness", "assume the network will drop the connection at the worst moment"),
    ("Simplicity", "prefer the boring solution that a colleague understands at a glance"),
]
_CHINESE = [
    "总结一下：先把问题拆小，再逐步验证每一部分。",
    "简单来说，这个方法在大多数情况下既快速又可靠。",
    "需要注意的是，网络请求可能随时中断，所以要做好重试。",
    "希望这个解释对你有帮助！如果还有问题，欢迎继续提问。",
]
_CLOSINGS = [
    "If you share more details about your case, I can tailor the example.",
    "Let me know if you would like a version in another language.",
    "That covers the essentials; the rest is practice.",
]
_FILLER = [
    "Another way to look at it is to start from the data and ask what must stay true at every step.",
    "In production, logging the inputs that caused a failure saves hours of guessing later.",
    "这一点在处理中文文本时尤其重要，因为一个汉字在 UTF-8 中占三个字节。",
    "Small, well-named functions make the overall design easier to change.",
    "When in doubt, write the test first and let it tell you what the interface should be.",
]
_REASONING = [
    "The user is asking about {topic}. ",
    "I should explain the core idea first, then give a compact example. ",
    "A list of practical points will help, and a short code block makes it concrete. ",
    "I will end with a brief summary in Chinese. ",
    "让我整理一下思路。",
]


@dataclass(frozen=True)
class Answer:
    reasoning: list[str]  # pieces, streamed first by thinking models
    content: list[str]  # pieces

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


def split_pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def seed_for(messages: list[dict]) -> int:
    digest = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).digest()
    return int.from_bytes(digest[:8], "big")


def build_answer(messages: list[dict], *, thinks: bool, tokens: int | None = None, echo: str | None = None) -> Answer:
    rng = random.Random(seed_for(messages))  # noqa: S311 - determinism, not security
    title, function, idea = rng.choice(_TOPICS)
    reasoning = split_pieces("".join(line.format(topic=title.lower()) for line in _REASONING)) if thinks else []
    if echo is not None:
        return Answer(reasoning=reasoning, content=split_pieces(echo) if echo else [])
    points = rng.sample(_POINTS, 3)
    text = (
        f"## {title}\n\n"
        f"{rng.choice(_INTROS)} {title} {idea}.\n\n"
        + "".join(f"- **{name}**: {detail}\n" for name, detail in points)
        + f"\n```python\ndef {function}(items):\n"
        f'    """Return the items in a stable order."""\n'
        f"    return sorted(set(items))\n```\n\n"
        f"{rng.choice(_CHINESE)}\n\n{rng.choice(_CLOSINGS)}"
    )
    content = split_pieces(text)
    if tokens is not None:
        while len(content) < tokens:
            content += split_pieces("\n\n" + rng.choice(_FILLER))
        content = content[:tokens]
    return Answer(reasoning=reasoning, content=content)


# A request whose system message asks for a chat's title (the app's title request, services/personal/titles.py, and
# any client's that asks the same way) is answered with a short title made of the user's own words, in their
# language: deterministic, and sensible enough to read in a sidebar.
_TITLE_ASK = re.compile(r"\btitle of (a|the|this) (chat|conversation)\b", re.IGNORECASE)
_USER_LINE = re.compile(r"^User:\s*(.*?)(?:\n\s*\nAssistant:|\Z)", re.DOTALL)
_LABEL_MARKERS = re.compile(r"\[\[[^\]]*\]\]")
_TITLE_WORDS = 5
_TITLE_WIDE_CHARS = 10


def asks_for_title(messages: list[dict]) -> bool:
    return any(
        m.get("role") == "system" and isinstance(m.get("content"), str) and _TITLE_ASK.search(m["content"])
        for m in messages
    )


def title_answer(messages: list[dict], *, thinks: bool) -> Answer:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    text = last.get("content") if isinstance(last.get("content"), str) else ""
    match = _USER_LINE.search(text.strip())
    words = " ".join(_LABEL_MARKERS.sub(" ", match.group(1) if match else text).split())
    if re.match(rf"[{_WIDE}]", words):
        title = re.sub(r"[\s，。？！、,.?!]", "", words)[:_TITLE_WIDE_CHARS]
    else:
        title = " ".join(words.split()[:_TITLE_WORDS]).rstrip(".,;:!?")
        title = title[:1].upper() + title[1:]
    reasoning = split_pieces("The user wants a short title for this chat. ") if thinks else []
    return Answer(reasoning=reasoning, content=split_pieces(title or "New chat"))
