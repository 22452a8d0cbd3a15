"""An incremental Server-Sent Events decoder: bytes in, events out, no I/O.

Follows the WHATWG event-stream rules that matter for LLM streams: LF, CR and CRLF line endings (a CR at the end of
one read may be followed by the LF of the next), ``field:value`` with at most one leading space removed, multi-line
``data`` joined with ``\\n``, comment lines ignored. Lines are cut on bytes and decoded only when complete, so a
multi-byte UTF-8 character split across reads is never decoded in halves (line endings are ASCII and cannot occur
inside a multi-byte sequence).

An upstream is not trusted to end its lines: a line (or an event's joined data) longer than ``MAX_LINE_BYTES`` is a
``BadResponse``, and bytes are appended to one ``bytearray`` and scanned once each, so a hostile endless line costs
linear time and bounded memory instead of a copy of the whole buffer per read.
"""

from __future__ import annotations

from typing import NamedTuple

from conversations.kimi.errors import BadResponse

_BOM = b"\xef\xbb\xbf"
# The largest honest line is one JSON chunk (a delta, a tool call's arguments, a usage block): kilobytes. 8 MB is far
# above that and far below what would hurt a worker.
MAX_LINE_BYTES = 8 * 1024 * 1024


class SSEEvent(NamedTuple):
    """One event (a tuple: made ~3× faster than a frozen dataclass, once per piece of every answer)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for a line ending
        self._data_bytes = 0
        self._skip_lf = False  # the previous read ended in CR: an LF starting this one belongs to it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._started and not self._buffer and not self._data and not self._skip_lf:
            events = self._whole_data_events(chunk)
            if events is not None:
                return events
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []  # could still be a BOM: wait for more bytes
            self._started = True
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
        events: list[SSEEvent] = []
        for line in self._take_lines():
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def _whole_data_events(self, chunk: bytes) -> list[SSEEvent] | None:
        """The events of a read that holds whole ``data: …`` events and nothing else (an LLM stream's every read,
        nearly), without the line machinery: what ``feed`` would return for it, or None to let ``feed`` read it.
        A read that ends mid-event, holds another field, a comment, a CR, a multi-line or an overlong event, or an
        empty line too many is not of this kind. Called only between events (no line or data pending)."""
        if not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return None
        parts = chunk.split(b"\n\n")
        parts.pop()  # the empty rest after the last event's blank line
        for part in parts:
            if not part.startswith(b"data: ") or b"\n" in part or len(part) > self.max_line_bytes:
                return None
        event_id, retry = self._id, self._retry
        return [SSEEvent(part[6:].decode("utf-8", errors="replace"), "message", event_id, retry) for part in parts]

    def end(self) -> list[SSEEvent]:
        """The stream closed. An event whose lines all arrived but whose blank line did not is still delivered;
        a final line without its terminator is dropped, since it may have been cut short."""
        self._buffer = bytearray()
        self._scanned = 0
        event = self._dispatch()
        return [event] if event is not None else []

    def _take_lines(self) -> list[bytes]:
        lines: list[bytes] = []
        buffer = self._buffer
        start = 0
        scan = self._scanned  # nothing before this offset holds a line ending: never search it twice
        length = len(buffer)
        while True:
            cr = buffer.find(b"\r", scan)
            lf = buffer.find(b"\n", scan)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                lines.append(bytes(buffer[start:lf]))
                start = scan = lf + 1
                continue
            lines.append(bytes(buffer[start:cr]))
            if cr + 1 < length:
                start = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                start = cr + 1
                self._skip_lf = True  # the LF of a CRLF may arrive in the next read
            scan = start
        if start:
            del buffer[:start]  # what is left is one unfinished line, short unless it is about to be refused
        self._scanned = len(buffer)
        if self._scanned > self.max_line_bytes:
            raise BadResponse(detail=f"an SSE line longer than {self.max_line_bytes} bytes")
        return lines

    def _process_line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_line_bytes:
                raise BadResponse(detail=f"an SSE event with more than {self.max_line_bytes} bytes of data")
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(data="\n".join(self._data), event=self._event or "message", id=self._id, retry=self._retry)
        self._data = []
        self._data_bytes = 0
        self._event = ""
        return event
