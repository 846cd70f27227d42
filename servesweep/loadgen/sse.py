"""Incremental Server-Sent Events parser for OpenAI-style streams.

Network reads do not respect event boundaries: one read may hold half an event or several.
`SSEParser.feed` takes raw bytes as they arrive and returns the `data` payloads of the events
completed by them. Comments (`:` lines, used as keep-alives), `event:`/`id:`/`retry:` fields and
blank keep-alive events are dropped. Multi-line `data` fields are joined with newlines as the
SSE specification says.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEParser:
    __slots__ = ("_buffer", "_data_lines")

    def __init__(self) -> None:
        self._buffer = b""
        self._data_lines: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume bytes; return the data payloads of every event they complete."""
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in data:
            return self._parse(data)
        # CRLF or lone-CR line endings: normalize. A CR at the very end may be the first half
        # of a CRLF split across reads, so it waits for the next read.
        pending_cr = data.endswith(b"\r")
        if pending_cr:
            data = data[:-1]
        events = self._parse(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if pending_cr:
            self._buffer += b"\r"
        return events

    def _parse(self, data: bytes) -> list[bytes]:
        events: list[bytes] = []
        lines = data.split(b"\n")
        # The last element is an unterminated line (possibly empty): keep it for the next read.
        self._buffer = lines.pop()
        for line in lines:
            if not line:
                if self._data_lines:
                    events.append(b"\n".join(self._data_lines))
                    self._data_lines = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data_lines.append(value[1:] if value.startswith(b" ") else value)
            # Comments (":..."), "event:", "id:", "retry:" and unknown fields carry no payload.
        return events

    def flush(self) -> list[bytes]:
        """End of stream: an event not closed by a blank line still counts."""
        events: list[bytes] = []
        tail = self._buffer.rstrip(b"\r")
        self._buffer = b""
        if tail.startswith(b"data:"):
            value = tail[5:]
            self._data_lines.append(value[1:] if value.startswith(b" ") else value)
        if self._data_lines:
            events.append(b"\n".join(self._data_lines))
            self._data_lines = []
        return events
