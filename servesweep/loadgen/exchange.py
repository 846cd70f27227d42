"""Turns one HTTP response, fed as bytes with their arrival times, into a `RequestRecord`.

Transport-free: the asyncio client (servesweep.loadgen.client) and the Locust user
(servesweep.locust) feed the same `Exchange`, so TTFT, ITL, TPOT and e2e are defined once.
This is the hot path: per streamed chunk it splits SSE events and decodes one small JSON object.
"""

from __future__ import annotations

from typing import Any

import orjson

from servesweep.loadgen.records import ERROR_HTTP, ERROR_STREAM, RequestRecord
from servesweep.loadgen.sse import DONE, SSEParser


def _choice_text(choice: dict[str, Any]) -> str | None:
    """Text of a choice, or None for a chunk that carries no generated token (a role header)."""
    text = choice.get("text")
    if text is not None:
        return text
    delta = choice.get("delta")
    if delta is None:
        message = choice.get("message")
        return message.get("content") if message else None
    content = delta.get("content")
    if "role" in delta and not content:
        return None
    return content if content is not None else ""


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err if err is not None else obj)


class Exchange:
    """Fills one RequestRecord from a response as its bytes arrive (times relative to t0)."""

    __slots__ = ("record", "t0", "stream", "pieces", "parser", "body", "done", "arrivals", "reason")

    def __init__(self, record: RequestRecord, t0: float, stream: bool, keep_text: bool) -> None:
        self.record, self.t0, self.stream = record, t0, stream
        self.pieces: list[str] | None = [] if keep_text else None
        self.parser = SSEParser()
        self.body: list[bytes] = []
        self.done = False
        self.arrivals = record.chunk_arrivals_s
        self.reason = ""

    def on_sent(self, now: float) -> None:
        self.record.wire_s = now - self.t0

    def on_status(self, status: int, reason: str) -> None:
        self.record.http_status = status
        self.reason = reason

    def on_body(self, data: bytes, now: float) -> None:
        if not self.stream or self.record.http_status != 200:
            self.body.append(data)
            return
        now -= self.t0
        for event in self.parser.feed(data):
            self._event(event, now)

    def _event(self, data: bytes, now: float) -> None:
        if data == DONE:
            self.done = True
            return
        record = self.record
        obj = orjson.loads(data)
        choices = obj.get("choices")
        if choices:
            first = choices[0]
            text = first.get("text")  # completions: skip the general lookup per token
            if text is None:
                text = _choice_text(first)
            if text is not None:
                if not self.arrivals:
                    record.first_token_s = now
                self.arrivals.append(now)
                if self.pieces is not None:
                    self.pieces.append(text)
        elif "error" in obj:
            record.error_kind, record.error_message = ERROR_STREAM, _error_text(obj)
        usage = obj.get("usage")
        if usage:
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")

    def on_complete(self, now: float) -> None:
        record = self.record
        now -= self.t0
        if record.http_status != 200:
            body = b"".join(self.body)
            record.error_kind = ERROR_HTTP
            try:
                record.error_message = _error_text(orjson.loads(body))
            except orjson.JSONDecodeError:
                record.error_message = body[:500].decode(errors="replace") or self.reason
            record.end_s = now
            return
        if not self.stream:
            record.end_s = now
            obj = orjson.loads(b"".join(self.body))
            if "error" in obj:
                record.error_kind, record.error_message = ERROR_STREAM, _error_text(obj)
                return
            usage = obj.get("usage") or {}
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
            # Without streaming, the whole answer arrives at once: TTFT is the e2e latency.
            record.first_token_s = now
            if self.pieces is not None and obj.get("choices"):
                record.output_text = _choice_text(obj["choices"][0])
            return
        for data in self.parser.flush():
            self._event(data, now)
        record.end_s = now
        if self.pieces is not None:
            record.output_text = "".join(self.pieces)
        if record.error_kind is None and not self.done:
            record.error_kind = ERROR_STREAM
            record.error_message = "stream ended without 'data: [DONE]'"
