"""Incremental Server-Sent Events parser for OpenAI-style streams.

Network reads do not respect event boundaries: one read may hold half an event or several.
`SSEParser.feed` takes raw bytes as they arrive and returns the `data` payloads of the events
completed by them. Comments (`:` lines, used as keep-alives), `event:`/`id:`/`retry:` fields and
blank keep-alive events are dropped. Multi-line `data` fields are joined with newlines as the
SSE specification says.

Cost is linear in the bytes fed: the unterminated end of a line is kept as a list of pieces and
joined once, when its line ends, so a large event arriving over many reads is not copied and
rescanned on every read (an 8 MB event in 8 KB reads took 1.5 s that way; it grew quadratically).

The common read, whole one-line `data: ` events and nothing else (what vLLM and most servers
send), takes a fast path: one `split` of the read gives every payload, after a count of its line
ends proves that each piece is one whole `data: ` line followed by a blank line. The per-line
parse runs only for what that proof rejects (CR line ends, multi-line data, comments, an event
split across reads), so both paths give the same payloads.
"""

from __future__ import annotations

DONE = b"[DONE]"
# The most bytes one line or one event may hold. OpenAI-style events are a few hundred bytes (a
# whole non-streamed answer in one event: a few MB); a line that never ends, or an event that never
# closes, is a broken or hostile server, and buffering it took 3.4 GB in 30 s. Checked only where a
# line or event spans reads, so a well-formed stream pays nothing for it.
MAX_EVENT_BYTES = 32 * 1024 * 1024


_LINE_COST = 64  # what one held line costs in memory beyond its bytes (object and list slot)


class EventTooLarge(ValueError):
    """A line or event past MAX_EVENT_BYTES: the request fails as a stream error."""


_FIELDS = (b":", b"event:", b"id:", b"retry:", b"event", b"id", b"retry")
_EVENT_START = b"data: "
_EVENT_SEPARATOR = b"\n\ndata: "  # the end of one one-line event and the start of the next


def _whole_events(data: bytes, end: int) -> list[bytes] | None:
    """The payloads of `data[:end]` when it is nothing but whole one-line `data: ` events (it ends
    with a blank line), else None. The split on the separator accounts for two LFs per event; if
    no more LFs are there, no payload has a line end inside (so each is one `data: ` line, then a
    blank one). A payload that starts with a space keeps it: SSE strips only the first one."""
    if not data.startswith(_EVENT_START) or data.find(b"\r", 0, end) >= 0:
        return None
    payloads = data[6:end - 2].split(_EVENT_SEPARATOR)
    return payloads if data.count(b"\n", 0, end) == 2 * len(payloads) else None


class SSEParser:
    __slots__ = ("_tail", "_tail_bytes", "_pending_cr", "_data_lines", "_data_bytes", "foreign")

    def __init__(self) -> None:
        self._tail: list[bytes] = []  # pieces of the current, not yet terminated line
        self._tail_bytes = 0  # their length (checked against MAX_EVENT_BYTES)
        self._pending_cr = False  # the last read ended in CR: a line end, or the first half of CRLF
        self._data_lines: list[bytes] = []
        self._data_bytes = 0  # the held event's size, counted from its second data line on
        # The first line that is no SSE field at all (an HTML page, a plain-text error), kept so a
        # stream that never had an event can say what came instead. Checked only for lines that are
        # not `data:`, so a well-formed stream pays nothing for it.
        self.foreign: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume bytes; return the data payloads of every event they complete."""
        if not chunk:
            return []
        if not (self._data_lines or self._pending_cr):
            end = chunk.rfind(b"\n\n") + 2
            if end > 1:
                # The line the last read left unterminated (it has no line end) starts this one.
                data = b"".join((*self._tail, chunk[:end])) if self._tail else chunk
                payloads = _whole_events(data, len(data) if self._tail else end)
                if payloads is not None:
                    self._tail = []
                    return payloads + self._feed_lines(chunk[end:]) if end < len(chunk) else payloads
        return self._feed_lines(chunk)

    def _feed_lines(self, chunk: bytes) -> list[bytes]:
        """The line-by-line parse, for any read the fast path does not take."""
        if not chunk:
            return []
        if self._pending_cr:
            self._pending_cr = False
            # The CR that ended the previous read ended a line; an LF right after it is its other half.
            if not chunk.startswith(b"\n"):
                chunk = b"\n" + chunk
        if b"\r" in chunk:
            # CRLF or lone-CR line endings: normalize. A CR at the very end may be the first half of a
            # CRLF split across reads, so its line waits for the next read (or for flush).
            if chunk.endswith(b"\r"):
                self._pending_cr = True
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        # The last element is an unterminated line (possibly empty): keep it for the next read.
        last = lines.pop()
        if not lines:
            if last:
                self._keep(last)
            return []
        if self._tail:
            self._tail.append(lines[0])
            lines[0] = b"".join(self._tail)
            self._tail, self._tail_bytes = [], 0
        if last:
            self._keep(last)
        return self._parse(lines)

    def _keep(self, piece: bytes) -> None:
        """Hold the unterminated end of a line for the next read, within MAX_EVENT_BYTES."""
        self._tail_bytes += len(piece)
        if self._tail_bytes > MAX_EVENT_BYTES:
            self._tail, self._tail_bytes = [], 0
            raise EventTooLarge(f"a stream line longer than {MAX_EVENT_BYTES >> 20} MiB without a line end "
                                "(the server's stream is broken)")
        self._tail.append(piece)

    def _parse(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data_lines:
                    events.append(b"\n".join(self._data_lines))
                    self._data_lines = []
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                if self._data_lines:
                    self._more_data(value)
                else:
                    self._data_lines.append(value)
            elif self.foreign is None and not line.startswith(_FIELDS):
                self.foreign = line[:300]
            # Comments (":..."), "event:", "id:", "retry:" and unknown fields carry no payload.
        return events

    def _more_data(self, value: bytes) -> None:
        """A second (third, ...) data line of one event, rare in practice: the event is held until its
        blank line, within MAX_EVENT_BYTES (a line counts at least _LINE_COST, so a flood of empty
        `data:` lines is bounded too)."""
        lines = self._data_lines
        if len(lines) == 1:
            self._data_bytes = len(lines[0]) + _LINE_COST
        self._data_bytes += len(value) + _LINE_COST
        if self._data_bytes > MAX_EVENT_BYTES:
            self._data_lines = []
            raise EventTooLarge(f"a stream event longer than {MAX_EVENT_BYTES >> 20} MiB that never ended "
                                "(no blank line: the server's stream is broken)")
        lines.append(value)

    def flush(self) -> list[bytes]:
        """End of stream: an event not closed by a blank line still counts."""
        events: list[bytes] = []
        tail = b"".join(self._tail)
        self._tail, self._tail_bytes = [], 0
        self._pending_cr = False
        if tail.startswith(b"data:"):
            value = tail[5:]
            self._data_lines.append(value[1:] if value.startswith(b" ") else value)
        elif tail and self.foreign is None and not tail.startswith(_FIELDS):
            self.foreign = tail[:300]
        if self._data_lines:
            events.append(b"\n".join(self._data_lines))
            self._data_lines = []
        return events
