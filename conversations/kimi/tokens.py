"""A local token estimate for when the provider reported no usage (an interrupted stream) and has no tokenizer API.

Kimi's tokenizer spends about one token per CJK character and about one per four characters of Latin text; this
errs slightly high, which is the safe side for budgets and context checks.
"""

from __future__ import annotations

import math
import re

# CJK ideographs, kana, hangul and full-width punctuation: roughly one token each.
_WIDE = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_PER_MESSAGE_OVERHEAD = 4  # role markers and separators around every message


def estimate_tokens_locally(text: str) -> int:
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    rest = len(text) - wide
    return wide + math.ceil(rest / 4)


def estimate_messages_locally(messages: list[dict]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        total += _PER_MESSAGE_OVERHEAD + estimate_tokens_locally(str(content))
        total += estimate_tokens_locally(str(message.get("reasoning") or message.get("reasoning_content") or ""))
    return total
