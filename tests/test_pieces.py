"""An answer's text as the stream's parser keeps it (conversations/kimi/events.Pieces): whole when read, and
without a string object per piece while it streams."""

from __future__ import annotations

import tracemalloc

import orjson

from conversations.kimi.events import Pieces
from conversations.kimi.openai_format import StreamParser
from conversations.kimi.sse import SSEEvent


def test_pieces_read_whole_in_order():
    pieces = Pieces()
    assert not pieces and str(pieces) == ""
    words = [f"w{n} " for n in range(Pieces.GROUP * 3 + 5)]
    for word in words:
        pieces.append(word)
    assert pieces and "".join(pieces) == str(pieces) == "".join(words)


def test_a_parser_keeps_a_long_answer_in_a_few_strings():
    """600 pieces of a few characters: the parser kept each as a string of its own, ~113 bytes a piece (34 KB an
    answer at 1,000 streams: a third of the user API's memory a stream). Now the text and a string per 64 pieces."""
    events = [
        SSEEvent(data=orjson.dumps({"choices": [{"index": 0, "delta": {"content": f"tok{n % 10} "}}]}).decode())
        for n in range(600)
    ]
    tracemalloc.start()
    try:
        parser = StreamParser()
        before = tracemalloc.take_snapshot()
        for event in events:
            parser.feed(event)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert "".join(parser.text) == "".join(f"tok{n % 10} " for n in range(600))
    assert kept / 600 < 25, f"{kept / 600:.0f} bytes a piece"  # the text itself: 5 bytes a piece
