"""Turns one HTTP response, fed as bytes with their arrival times, into a `RequestRecord`.

Transport-free: the asyncio client (servesweep.loadgen.client) and the Locust user
(servesweep.locust) feed the same `Exchange`, so TTFT, ITL, TPOT and e2e are defined once.
This is the hot path: per streamed chunk it splits SSE events and decodes one small JSON object.

Which chunks are token arrivals (they set TTFT, every ITL gap, and the chunk count):
  - a chunk whose first choice carries generated output: a non-empty `text` (completions), or a
    delta with non-empty `content`, `reasoning_content`/`reasoning` or `tool_calls` (chat);
  - after the first token and before the finish, a chunk with an empty-string `text`/`content`:
    vLLM sends one chunk per generated token, and a token whose text is empty (a special token
    skipped in detokenization, the first half of a multi-byte character) was still generated;
    counting it keeps the chunk count equal to usage's completion_tokens.
Not arrivals: role headers, `delta: {}`, `content: null`, an empty chunk before the first token
(servers send those while the prompt is still being processed: counting one made TTFT 0.5 ms
where the server took 200 ms) and an empty chunk that only carries the `finish_reason`.

A stream event that is not what the OpenAI protocol allows (`null`, a list, a choice that is not
an object, `usage` that is not an object of integers) makes the request a stream_error that
quotes the event; the stream is still read to its end. An error event, `{"error": ...}` or
vLLM's `{"object": "error", "message": ...}`, makes it a stream_error with the server's message.
"""

from __future__ import annotations

from typing import Any

import orjson

from servesweep.loadgen.records import (
    ERROR_HTTP,
    ERROR_STREAM,
    TOKENS_FROM_CHUNKS,
    TOKENS_FROM_USAGE,
    RequestRecord,
)
from servesweep.loadgen.sse import DONE, SSEParser

# Delta fields that carry generated tokens without being the answer's text (reasoning models, tools).
_OTHER_OUTPUT = ("reasoning_content", "reasoning", "tool_calls")


def _message_text(obj: dict[str, Any]) -> str | None:
    """The answer's text in a non-streamed response, None where it has none."""
    choices = obj.get("choices")
    if not choices or choices.__class__ is not list or choices[0].__class__ is not dict:
        return None
    choice = choices[0]
    text = choice.get("text")
    if text.__class__ is str:
        return text
    message = choice.get("message")
    content = message.get("content") if message.__class__ is dict else None
    return content if content.__class__ is str else None


def _error_text(obj: Any) -> str | None:
    """The server's message in an error body or event; None when `obj` is not one."""
    if obj.__class__ is not dict:
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if err is not None:
        return str(err)
    if obj.get("object") == "error":  # vLLM's ErrorResponse: no `error` wrapper
        return str(obj.get("message") or obj)
    return None


def _usage_counts(usage: Any) -> tuple[int | None, int | None] | None:
    """(prompt_tokens, completion_tokens) of a `usage` object; None if malformed."""
    if usage.__class__ is not dict:
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if (prompt is not None and prompt.__class__ is not int) or (
            completion is not None and completion.__class__ is not int):
        return None
    return prompt, completion


def _quote(data: bytes) -> str:
    text = data[:200].decode(errors="replace")
    return text + "..." if len(data) > 200 else text


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

    def _fail(self, message: str) -> None:
        """The request failed: the first reason found is the one kept."""
        record = self.record
        if record.error_kind is None:
            record.error_kind, record.error_message = ERROR_STREAM, message

    def _malformed(self, data: bytes, what: str) -> None:
        self._fail(f"malformed stream event ({what}): {_quote(data)}")

    def _event(self, data: bytes, now: float) -> None:
        if data == DONE:
            self.done = True
            return
        record = self.record
        obj = orjson.loads(data)
        try:
            choices = obj.get("choices")
        except AttributeError:
            return self._malformed(data, "not a JSON object")
        if choices:
            try:
                first = choices[0]
                text = first.get("text")
            except (AttributeError, KeyError, TypeError):
                return self._malformed(data, "'choices' is not a list of objects")
            if not (text and text.__class__ is str):  # anything but a completions token
                text = self._choice_text(first, data)
            if text is not None:
                arrivals = self.arrivals
                if not arrivals:
                    record.first_token_s = now
                arrivals.append(now)
                if self.pieces is not None:
                    self.pieces.append(text)
        else:
            message = _error_text(obj)
            if message is not None:
                self._fail(message)
        usage = obj.get("usage")
        if usage:
            counts = _usage_counts(usage)
            if counts is None:
                return self._malformed(data, "'usage' is not an object of integers")
            record.prompt_tokens, record.completion_tokens = counts
            record.completion_tokens_source = TOKENS_FROM_USAGE

    def _choice_text(self, choice: dict[str, Any], data: bytes) -> str | None:
        """The text of a chunk's choice that is a token arrival (see the module docstring), None for
        one that is not (or is malformed: then recorded)."""
        text = choice.get("text")
        if text is None:
            delta = choice.get("delta")
            if delta is None:
                delta = choice.get("message")  # a whole message in one chunk
                if delta is None:
                    return None
            if delta.__class__ is not dict:
                return self._malformed(data, "a delta that is not an object")
            text = delta.get("content")
            if text.__class__ is not str and text is not None:
                return self._malformed(data, "a content that is not a string")
            if text:
                return text
            for key in _OTHER_OUTPUT:
                if delta.get(key):
                    return ""
            if text is None or "role" in delta:
                return None
        elif text.__class__ is not str:
            return self._malformed(data, "a text that is not a string")
        # An empty text or content: a token only between the first one and the finish.
        if self.arrivals and choice.get("finish_reason") is None:
            return ""
        return None

    def on_complete(self, now: float) -> None:
        record = self.record
        now -= self.t0
        if record.http_status != 200:
            body = b"".join(self.body)
            record.error_kind = ERROR_HTTP
            try:
                message = _error_text(orjson.loads(body))
            except orjson.JSONDecodeError:
                message = None
            record.error_message = message or body[:500].decode(errors="replace") or self.reason
            record.end_s = now
            return
        if not self.stream:
            record.end_s = now
            data = b"".join(self.body)
            obj = orjson.loads(data)
            if obj.__class__ is not dict:
                record.error_kind = ERROR_STREAM
                record.error_message = f"malformed response (not a JSON object): {_quote(data)}"
                return
            message = _error_text(obj)
            if message is not None:
                record.error_kind, record.error_message = ERROR_STREAM, message
                return
            usage = obj.get("usage")
            counts = _usage_counts(usage) if usage else (None, None)
            if counts is None:
                record.error_kind = ERROR_STREAM
                record.error_message = f"malformed response ('usage' is not an object of integers): {_quote(data)}"
                return
            record.prompt_tokens, record.completion_tokens = counts
            if record.completion_tokens is not None:
                record.completion_tokens_source = TOKENS_FROM_USAGE
            # Without streaming, the whole answer arrives at once: TTFT is the e2e latency.
            record.first_token_s = now
            if self.pieces is not None:
                record.output_text = _message_text(obj)
            return
        for data in self.parser.flush():
            self._event(data, now)
        record.end_s = now
        if self.pieces is not None:
            record.output_text = "".join(self.pieces)
        if record.error_kind is None and not self.done:
            record.error_kind = ERROR_STREAM
            record.error_message = "stream ended without 'data: [DONE]'"
        if record.error_kind is None and record.completion_tokens is None:
            # No usage in the stream: count what arrived (see TOKENS_FROM_CHUNKS).
            record.completion_tokens = len(self.arrivals)
            record.completion_tokens_source = TOKENS_FROM_CHUNKS
