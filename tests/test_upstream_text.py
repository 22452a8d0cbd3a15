"""What a hostile upstream sends is stored without harm."""

from __future__ import annotations

import json


def test_nul_characters_from_the_upstream_never_reach_the_database():
    """PostgreSQL cannot store U+0000: an answer carrying one would fail its final store. Every provider's text
    enters through ContentDelta/ReasoningDelta, which turn it into U+FFFD."""
    from conversations.kimi import anthropic_format, openai_format
    from conversations.kimi.events import ContentDelta, ReasoningDelta
    from conversations.kimi.sse import SSEEvent

    chunk = {"choices": [{"index": 0, "delta": {"content": "a\x00b", "reasoning_content": "\x00"}}]}
    events = openai_format.StreamParser().feed(SSEEvent(json.dumps(chunk)))
    texts = {type(e).__name__: e.text for e in events if isinstance(e, ContentDelta | ReasoningDelta)}
    assert texts == {"ContentDelta": "a\ufffdb", "ReasoningDelta": "\ufffd"}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x\x00"}}
    events = anthropic_format.StreamParser().feed(SSEEvent(json.dumps(delta), event="content_block_delta"))
    assert [e.text for e in events if isinstance(e, ContentDelta)] == ["x\ufffd"]
