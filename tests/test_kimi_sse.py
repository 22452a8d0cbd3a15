"""The SSE decoder is pure: the same frames, split at every byte boundary and fed in fragments of 1, 97 and 100000
bytes with LF, CR and CRLF line endings, must always decode to the same events."""

import json
import time

import pytest

from conversations.kimi import errors
from conversations.kimi.sse import MAX_LINE_BYTES, SSEDecoder, SSEEvent

CHINESE = "你好，世界！这是一个测试。"
PAYLOADS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "思考中…"}}]},
    {"choices": [{"index": 0, "delta": {"content": CHINESE + " emoji 🚀 done"}}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
]


def frames(eol: str) -> tuple[bytes, list[SSEEvent]]:
    """A stream using every feature a provider may send, and the events it must decode to."""
    lines: list[str] = [": keep-alive comment", "retry: 3000", ""]
    expected: list[SSEEvent] = []
    for number, payload in enumerate(PAYLOADS):
        text = json.dumps(payload, ensure_ascii=False)
        if number == 1:
            lines += ["event: message", f"id: {number}", "data:" + text, ""]  # no space after "data:"
            expected.append(SSEEvent(data=text, event="message", id=str(number), retry=3000))
        elif number == 2:
            pretty = json.dumps(payload, ensure_ascii=False, indent=1).split("\n")
            lines += [f"data: {part}" for part in pretty] + [""]  # one payload over several data lines
            expected.append(SSEEvent(data="\n".join(pretty), id="1", retry=3000))
        else:
            lines += [f"data: {text}", ""]
            expected.append(SSEEvent(data=text, id="1" if number else None, retry=3000))
    lines += [": bye", "data: [DONE]", ""]
    expected.append(SSEEvent(data="[DONE]", id="1", retry=3000))
    return (eol.join(lines) + eol).encode(), expected


def decode(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = cut
    return events + decoder.end()


@pytest.mark.parametrize("eol", ["\n", "\r", "\r\n"], ids=["LF", "CR", "CRLF"])
@pytest.mark.parametrize("size", [1, 97, 100000])
def test_fragments_of_any_size_decode_the_same(eol, size):
    stream, expected = frames(eol)
    cuts = list(range(size, len(stream), size))
    assert decode(stream, cuts) == expected


@pytest.mark.parametrize("eol", ["\n", "\r", "\r\n"], ids=["LF", "CR", "CRLF"])
def test_split_at_every_byte_boundary(eol):
    stream, expected = frames(eol)
    for cut in range(1, len(stream)):
        assert decode(stream, [cut]) == expected, f"split at byte {cut}"


def test_multibyte_characters_split_inside_decode_whole():
    text = "data: " + CHINESE + "\n\n"
    raw = text.encode()
    assert len(raw) != len(text)  # the fixture really has multi-byte characters
    for cut in range(1, len(raw)):
        assert decode(raw, [cut]) == [SSEEvent(data=CHINESE)]


def test_crlf_split_between_cr_and_lf_is_one_line_ending():
    # "a" then "\r" | "\n" then "data: b": if the LF were a second line ending, "a" would be dispatched alone.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent(data="a\nb")]


def test_comments_and_unknown_fields_are_ignored():
    assert decode(b": ping\nfoo: bar\nevent: x\n\n: again\n\n", []) == []


def test_field_without_colon_and_single_space_rule():
    raw = b"data\ndata:  two spaces\n\n"
    assert decode(raw, []) == [SSEEvent(data="\n two spaces")]


def test_byte_order_mark_is_dropped_even_when_split():
    raw = "\ufeffdata: x\n\n".encode()
    assert decode(raw, [1]) == [SSEEvent(data="x")]
    assert decode(raw, [2]) == [SSEEvent(data="x")]


def test_end_delivers_a_complete_event_missing_its_blank_line_but_not_a_cut_line():
    assert decode(b"data: [DONE]\n", []) == [SSEEvent(data="[DONE]")]
    assert decode(b'data: {"choices": [{"delta": {"content": "cut', []) == []


def test_retry_must_be_digits_and_id_persists():
    events = decode(b"id: 7\nretry: soon\ndata: a\n\ndata: b\n\n", [])
    assert events == [SSEEvent(data="a", id="7"), SSEEvent(data="b", id="7")]


# --- SSE bounds (security issue item 16) -------------------------------------------------------------------------


def test_an_endless_line_is_refused_at_the_limit():
    decoder = SSEDecoder()
    piece = b"x" * 65536
    with pytest.raises(errors.BadResponse) as caught:
        for _ in range(MAX_LINE_BYTES // len(piece) + 2):
            decoder.feed(piece)
    assert "longer than" in caught.value.detail


def test_a_large_line_decodes_in_linear_time():
    """48 MB took 25 s of CPU when every read copied and rescanned the buffer; 7 MB in 8 KB reads must be quick,
    and twice the data must cost about twice the time, not four times."""

    def feed(total: int) -> float:
        decoder = SSEDecoder()
        started = time.process_time()
        decoder.feed(b"data: ")
        chunk = b"y" * 8192
        for _ in range(total // len(chunk)):
            assert decoder.feed(chunk) == []
        events = decoder.feed(b"\n\n")
        elapsed = time.process_time() - started
        assert len(events) == 1 and len(events[0].data) == total // len(chunk) * len(chunk)
        return elapsed

    small, large = feed(3_500_000), feed(7_000_000)
    assert large < 0.5
    assert large < 3 * small + 0.05


def test_many_data_lines_are_bounded_too():
    decoder = SSEDecoder(max_line_bytes=1000)
    with pytest.raises(errors.BadResponse):
        decoder.feed(b"data: " + b"z" * 100 + b"\n" * 1 + (b"data: " + b"z" * 100 + b"\n") * 20)
    assert SSEDecoder(max_line_bytes=1000).feed(b"data: ok\n\n") == [SSEEvent("ok")]


class LinesOnly(SSEDecoder):
    """The decoder without its shortcut for reads of whole ``data:`` events: every read through the line rules."""

    def _whole_data_events(self, chunk):
        return None


@pytest.mark.parametrize("seed", range(40))
def test_reads_of_whole_events_decode_as_the_line_rules_do(seed):
    """An LLM stream's reads are mostly whole ``data: …`` events, which take a shortcut (``_whole_data_events``):
    random streams (events of one or several data lines, ids, retries, comments, empty lines, CRs, multi-byte text),
    cut at random event boundaries and inside events, decode to the same events either way, and so do the same
    streams' refusals of an overlong event."""
    import random

    rng = random.Random(seed)
    parts = []
    for n in range(rng.randint(1, 30)):
        kind = rng.random()
        text = rng.choice(['{"a": 1}', CHINESE, "[DONE]", " leading space", "", "x" * rng.randint(1, 300)])
        if kind < 0.6:
            parts.append(f"data: {text}\n\n")
        elif kind < 0.7:
            parts.append(f"data: {text}\ndata: more\n\n")
        elif kind < 0.78:
            parts.append(f"id: {n}\nretry: {n * 10}\ndata: {text}\n\n")
        elif kind < 0.84:
            parts.append(f": comment {n}\n")
        elif kind < 0.9:
            parts.append("\n")
        elif kind < 0.95:
            parts.append(f"data:{text}\r\n\r\n")
        else:
            parts.append(f"event: other\ndata: {text}\n\n")
    stream = "".join(parts).encode()
    boundaries = [len("".join(parts[:i]).encode()) for i in range(1, len(parts))]
    cuts = sorted(set(rng.sample(boundaries, k=min(len(boundaries), rng.randint(0, 12)))))
    if rng.random() < 0.3 and len(stream) > 2:
        cuts = sorted({*cuts, rng.randint(1, len(stream) - 1)})

    def run(decoder, limit_stream=stream):
        events, start = [], 0
        try:
            for cut in [*cuts, len(limit_stream)]:
                events += decoder.feed(limit_stream[start:cut])
                start = cut
            return events + decoder.end()
        except errors.BadResponse as exc:
            return ("refused", len(events), exc.detail)

    assert run(SSEDecoder()) == run(LinesOnly())
    assert run(SSEDecoder(max_line_bytes=120)) == run(LinesOnly(max_line_bytes=120))


def test_the_shortcut_is_taken_for_reads_of_whole_data_events():
    decoder, chunk = SSEDecoder(), b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    decoder.feed(b"id: 7\nretry: 50\n\n")  # the stream has started; id and retry carry over
    assert decoder._whole_data_events(chunk) == [
        SSEEvent('{"a": 1}', id="7", retry=50),
        SSEEvent("[DONE]", id="7", retry=50),
    ]
    assert decoder.feed(chunk) == decoder._whole_data_events(chunk)
    for other in (b"data: a\n", b"data: a\r\n\r\n", b": c\ndata: a\n\n", b"data: a\n\n\n\n", b"data:a\n\n"):
        assert decoder._whole_data_events(other) is None, other
