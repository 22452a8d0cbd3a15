"""Real-shaped provider streams (tests/fixtures/kimi_streams/) replayed through the client's SSE decoder and stream
parser, cut at every byte position: the same text, reasoning, finish reason, usage or error whatever the cut.

The fixtures are written to the shapes the providers document and real clients have seen (kimi-api-notes.md §5, §7,
§12, §17; seeds 000-003): LF and CRLF, ``:`` comments, ``id:``/``event:``/``retry:`` lines, ``data:`` without its
space, multi-byte characters (every cut also splits them), reasoning before content, usage in the final choice and at
the top level, tool-call deltas keyed by index, and an error event in the middle of the stream.
"""

import json
from pathlib import Path

import pytest

from conversations.kimi import anthropic_format, openai_format
from conversations.kimi.errors import KimiError
from conversations.kimi.events import ContentDelta, Finish, ReasoningDelta, ToolCallDelta, ToolCalls, Usage
from conversations.kimi.sse import SSEDecoder

STREAMS = Path(__file__).parent / "fixtures" / "kimi_streams"
EXPECTED = json.loads((STREAMS / "expected.json").read_text())


def replay(raw: bytes, cuts: list[int], fmt) -> dict:
    decoder, parser = SSEDecoder(), fmt.StreamParser()
    events, error = [], None
    try:
        start = 0
        for cut in [*cuts, len(raw)]:
            for sse in decoder.feed(raw[start:cut]):
                if not parser.done:
                    events += parser.feed(sse)
            start = cut
        for sse in decoder.end():
            if not parser.done:
                events += parser.feed(sse)
    except KimiError as exc:
        error = exc.code
    usage = parser.usage()
    finishes = [e.reason for e in events if isinstance(e, Finish)]
    calls = [e for e in events if isinstance(e, ToolCalls)]
    fragments: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            fragments[event.index] = fragments.get(event.index, "") + event.arguments
    return {
        "tool_calls": [[c.id, c.type, c.name, c.arguments] for c in calls[0].calls] if calls else [],
        "tool_calls_events": len(calls),
        "calls_before_finish": bool(calls)
        and events.index(calls[0]) < len(events) - 1
        and isinstance(events[events.index(calls[0]) + 1], Finish),
        "fragments_joined": [fragments[i] for i in sorted(fragments)],
        "text": "".join(e.text for e in events if isinstance(e, ContentDelta)),
        "reasoning": "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "finish": finishes[0] if finishes else None,
        "finishes": len(finishes),
        "usage": [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens]
        if isinstance(usage, Usage)
        else None,
        "error": error,
        "done": parser.done,
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_stream_decodes_the_same_at_every_cut(name):
    raw = (STREAMS / name).read_bytes()
    expected = EXPECTED[name]
    fmt = anthropic_format if expected["format"] == "anthropic" else openai_format
    whole = replay(raw, [], fmt)
    for key in ("text", "reasoning", "finish", "usage", "error", "tool_calls"):
        assert whole[key] == expected[key], (name, key)
    # The complete calls come once, right before the finish, and are exactly the streamed fragments joined.
    assert whole["tool_calls_events"] == (1 if expected["tool_calls"] else 0)
    assert whole["calls_before_finish"] is bool(expected["tool_calls"])
    assert whole["fragments_joined"] == [call[3] for call in expected["tool_calls"]]
    assert whole["finishes"] <= 1
    assert whole["done"] is (expected["error"] is None)
    for cut in range(1, len(raw)):
        assert replay(raw, [cut], fmt) == whole, f"{name} cut at byte {cut}"
    assert replay(raw, list(range(1, len(raw))), fmt) == whole, f"{name} fed one byte at a time"


def test_the_fixtures_cover_what_the_issue_lists():
    raw = {name: (STREAMS / name).read_bytes() for name in EXPECTED}
    assert any(b"\r\n" in data for data in raw.values())  # CRLF
    assert any(data.startswith(b": ") or b"\n: " in data for data in raw.values())  # comments
    assert any(len(ch.encode()) > 1 for data in raw.values() for ch in data.decode())  # multi-byte characters
    assert any(b'"tool_calls"' in data for data in raw.values())
    assert any(b'"input_json_delta"' in data for data in raw.values())  # Anthropic-format tool use
    assert any(b'"error"' in data for data in raw.values())
    assert any(b'"choices":[],"usage"' in data for data in raw.values())  # top-level usage chunk
    assert any(b'"finish_reason":"stop","usage"' in data for data in raw.values())  # usage in the choice
    assert {EXPECTED[n]["format"] for n in EXPECTED} == {"openai", "anthropic"}
