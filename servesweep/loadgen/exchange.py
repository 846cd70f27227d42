"""Turns one HTTP response, fed as bytes with their arrival times, into a `RequestRecord`.

Transport-free: the asyncio client (servesweep.loadgen.client) and the Locust user
(servesweep.locust) feed the same `Exchange`, so TTFT, ITL, TPOT and e2e are defined once.
This is the hot path: per streamed chunk it splits SSE events and decodes one small JSON object.

Which chunks are token arrivals (they set TTFT, every ITL gap, and the chunk count). TTFT is the
time to the first generated token, as the server's own histogram and `vllm bench serve` define it,
whether or not that token has visible text. Two rules, chosen per chunk:
  - "usage_per_chunk": the chunk carries `usage` beside its choices (vLLM with
    `stream_options.continuous_usage_stats`, which servesweep asks for). The growth of
    `completion_tokens` is the number of tokens the chunk carries; a chunk that adds none (chat's
    role header, keep-alives) is not an arrival.
  - "chunks", where the server does not say: a completions chunk whose first choice has a string
    `text`, even "" (vLLM sends one chunk per token, and a token can decode to nothing: a special
    token, half of a UTF-8 character, an id the tokenizer does not cover); a chat delta with a string
    `content` (even "") that is not the role header, or with reasoning or tool-call output. Not
    arrivals: role headers, `delta: {}`, `content: null`. When the stream's final `usage` counts
    fewer tokens than such chunks, the surplus is taken off where non-token chunks sit: an empty
    last chunk that carries only the finish_reason, then empty chunks before the first text (some
    servers send those while the prompt is still being processed). A stream with no usage at all
    loses both kinds: nothing says they were tokens, and servers that send no usage use them as
    keep-alives and finish markers.
The time to the first chunk with visible text is kept apart as `first_text_s` (with many
textless tokens it lies far behind TTFT), and `tokens_without_text` counts the tokens whose chunk
had none, so a level whose text is mostly invisible shows it.

A response cut short is not a success (ERROR_TRUNCATED): one that ends with fewer tokens than asked
while EOS was ignored (`exact_length`; the count from the server's usage, or a finish_reason other
than "length" says so: chunks alone may carry several tokens each), or one whose finish_reason is
none the protocol uses for a finished answer (e.g. "abort"). Seen against a server that interrupts
the request in flight when a new one arrives: "8 ok" while 7 of them held 1 of the 32 tokens asked.

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
    ERROR_TRUNCATED,
    TIMING_CHUNKS,
    TIMING_USAGE_PER_CHUNK,
    TOKENS_FROM_CHUNKS,
    TOKENS_FROM_USAGE,
    RequestRecord,
)
from servesweep.loadgen.sse import DONE, MAX_EVENT_BYTES, EventTooLarge, SSEParser
from servesweep.loadgen.stream_event import UNSET
from servesweep.loadgen.stream_event import decode as _decode_typed

# What _choice_text returns for such a delta: visible output that is not the answer's text.
_OTHER = "<other output>"
# The finish reasons of an answer that ended as asked; any other (abort, error, cancelled) cut it short.
FINISHED = frozenset(("length", "stop", "tool_calls", "function_call"))
_loads = orjson.loads


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


class _DictDelta:
    """A delta dict seen through the attributes of stream_event.Delta, so one rule reads both."""

    __slots__ = ("content", "role", "reasoning_content", "reasoning", "tool_calls")

    def __init__(self, delta: dict[str, Any]) -> None:
        self.content = delta.get("content")
        self.role = delta["role"] if "role" in delta else UNSET
        self.reasoning_content = delta.get("reasoning_content")
        self.reasoning = delta.get("reasoning")
        self.tool_calls = delta.get("tool_calls")


def _delta_text(delta: Any) -> str | None:
    """The chunks rule for a chat delta (its types already checked): its text, "" for a token
    without visible text, _OTHER for reasoning or tool-call output, None for no token (no delta,
    a role header, `content: null`, `delta: {}`)."""
    if delta is None:
        return None
    text = delta.content
    if text:
        return text
    if delta.reasoning_content or delta.reasoning or delta.tool_calls:
        return _OTHER
    if text is None or delta.role is not UNSET:
        return None
    return ""


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


def _not_a_stream(foreign: bytes | None, had_tokens: bool) -> str:
    """Why a 200 stream ended without [DONE]: it was HTML (a proxy's or a web server's page, not the
    API) or other text, named as such; otherwise the stream was cut short."""
    if foreign is None or had_tokens:
        return "stream ended without 'data: [DONE]'"
    text = foreign.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return f"the server answered HTML, not an event stream (is the URL the API's?): {_quote(foreign)}"
    return f"the server answered something other than an event stream: {_quote(foreign)}"


def _quote(data: bytes) -> str:
    text = data[:200].decode(errors="replace")
    return text + "..." if len(data) > 200 else text


class Exchange:
    """Fills one RequestRecord from a response as its bytes arrive (times relative to t0)."""

    __slots__ = ("record", "t0", "stream", "pieces", "parser", "body", "body_bytes", "done", "arrivals", "reason",
                 "usage_tokens", "leading_empty", "last_empty_finish", "exact_length", "last_finish")

    def __init__(self, record: RequestRecord, t0: float, stream: bool, keep_text: bool,
                 exact_length: bool = False) -> None:
        self.record, self.t0, self.stream = record, t0, stream
        self.exact_length = exact_length  # EOS ignored: the answer must have the tokens asked
        self.last_finish: Any = None  # the finish_reason of the last choice seen (read at the end)
        self.pieces: list[str] | None = [] if keep_text else None
        self.parser = SSEParser()
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.done = False
        self.arrivals = record.chunk_arrivals_s
        self.reason = ""
        self.usage_tokens = 0  # completion_tokens of the last per-chunk usage
        self.leading_empty = 0  # token chunks without text before the first one with text
        self.last_empty_finish = False  # the last token chunk was empty and carried the finish_reason

    def on_sent(self, now: float) -> None:
        self.record.wire_s = now - self.t0

    def on_status(self, status: int, reason: str) -> None:
        self.record.http_status = status
        self.reason = reason

    def on_body(self, data: bytes, now: float) -> None:
        if not self.stream or self.record.http_status != 200:
            self._hold(data)
            return
        events = self.parser.feed(data)
        if events:
            now -= self.t0  # one float for every event of the read: no object per chunk
            event = self._event
            for payload in events:
                event(payload, now)

    def _hold(self, data: bytes) -> None:
        """A body read whole (not streamed, or an error answer), within MAX_EVENT_BYTES."""
        self.body.append(data)
        self.body_bytes += len(data)
        if self.body_bytes > MAX_EVENT_BYTES:
            self.body = []
            raise EventTooLarge(f"a response body longer than {MAX_EVENT_BYTES >> 20} MiB")

    def _fail(self, message: str) -> None:
        """The request failed: the first reason found is the one kept."""
        record = self.record
        if record.error_kind is None:
            record.error_kind, record.error_message = ERROR_STREAM, message

    def _malformed(self, data: bytes, what: str) -> None:
        self._fail(f"malformed stream event ({what}): {_quote(data)}")

    def _event(self, data: bytes, now: float) -> None:
        event = _decode_typed(data) if _decode_typed is not None else None
        if event is None:  # not the common shape (or no msgspec): read as a dict
            return self._event_from_dict(data, now)
        completion = None
        usage = event.usage
        if usage:  # a Usage with at least one count (stream_event.decode)
            record = self.record
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            record.prompt_tokens = None if prompt is UNSET else prompt
            record.completion_tokens = completion = None if completion is UNSET else completion
            record.completion_tokens_source = TOKENS_FROM_USAGE
        first = event.choices[0]
        text = first.text
        if text is None:
            text = _delta_text(first.delta or first.message)
        self._count(text, completion, first.finish_reason, now)

    def _event_from_dict(self, data: bytes, now: float) -> None:
        try:
            obj = _loads(data)
        except orjson.JSONDecodeError:
            if data == DONE:  # tried second: it comes once per stream
                self.done = True
                return
            raise
        if obj.__class__ is not dict:
            return self._malformed(data, "not a JSON object")
        record = self.record
        choices = obj.get("choices")
        usage = obj.get("usage")
        completion = None
        if usage:
            counts = _usage_counts(usage)
            if counts is None:
                return self._malformed(data, "'usage' is not an object of integers")
            record.prompt_tokens, completion = counts
            record.completion_tokens = completion
            record.completion_tokens_source = TOKENS_FROM_USAGE
        if not choices:
            message = _error_text(obj)
            if message is not None:
                self._fail(message)
            return
        try:
            first = choices[0]
            text = first.get("text")
        except (AttributeError, KeyError, TypeError):
            return self._malformed(data, "'choices' is not a list of objects")
        if text.__class__ is not str:
            text = self._choice_text(first, data)
        self._count(text, completion, first.get("finish_reason"), now)

    def _count(self, text: str | None, completion: int | None, finish_reason: Any, now: float) -> None:
        """Book one event's tokens: `text` is the choice's text ("" for a token without visible text,
        None for no token), `completion` the event's per-chunk completion_tokens, if any."""
        self.last_finish = finish_reason
        tokens = 0 if text is None else 1
        record = self.record
        if completion is not None:
            # Per-chunk usage: the server says how many tokens this chunk carries.
            tokens = completion - self.usage_tokens
            self.usage_tokens = completion
            record.token_timing = TIMING_USAGE_PER_CHUNK
        if tokens <= 0:
            return
        arrivals = self.arrivals
        if not arrivals:
            record.first_token_s = now
        arrivals.append(now)
        if text:
            if record.first_text_s is None:
                record.first_text_s = now
            self.last_empty_finish = False
            if self.pieces is not None and text is not _OTHER:
                self.pieces.append(text)
        else:
            record.tokens_without_text += tokens
            if record.first_text_s is None:
                self.leading_empty += 1
            self.last_empty_finish = finish_reason is not None

    def _choice_text(self, choice: dict[str, Any], data: bytes) -> str | None:
        """The text of a chat choice that is a token arrival under the "chunks" rule ("" for a token
        without visible text), None for one that is not (or is malformed: then recorded)."""
        if choice.get("text") is not None:
            return self._malformed(data, "a text that is not a string")
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
        return _delta_text(_DictDelta(delta))

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
            record.first_token_s = record.first_text_s = now
            if self.pieces is not None:
                record.output_text = _message_text(obj)
            choices = obj.get("choices")
            self._check_whole(choices[0] if choices.__class__ is list and choices else None)
            return
        for data in self.parser.flush():
            self._event(data, now)
        record.end_s = now
        if self.pieces is not None:
            record.output_text = "".join(self.pieces)
        if record.error_kind is None and not self.done:
            record.error_kind = ERROR_STREAM
            record.error_message = _not_a_stream(self.parser.foreign, bool(self.arrivals))
        if record.token_timing is None:
            record.token_timing = TIMING_CHUNKS
            self._drop_surplus_chunks()
        if self.arrivals:
            record.first_token_s = self.arrivals[0]
        if record.error_kind is None and record.completion_tokens is None:
            # No usage in the stream: count what arrived (see TOKENS_FROM_CHUNKS).
            record.completion_tokens = len(self.arrivals)
            record.completion_tokens_source = TOKENS_FROM_CHUNKS
        self._check_whole(self.last_finish)

    def _check_whole(self, finish: Any) -> None:
        """A well-formed answer cut short fails as ERROR_TRUNCATED (see the module doc)."""
        record = self.record
        if finish.__class__ is not str:
            finish = None
        record.finish_reason = finish
        if record.error_kind is not None:
            return
        asked, got = record.output_len_requested, record.completion_tokens
        short = self.exact_length and asked is not None and got is not None and got < asked and (
            record.completion_tokens_source == TOKENS_FROM_USAGE or (finish is not None and finish != "length"))
        if short:
            record.error_kind = ERROR_TRUNCATED
            record.error_message = (f"truncated: {got} of {asked} tokens while EOS was ignored (finish_reason "
                                    f"{finish!r}); the server cut the answer short")
        elif finish is not None and finish not in FINISHED:
            record.error_kind = ERROR_TRUNCATED
            record.error_message = f"truncated: finish_reason {finish!r} after {got} of {asked} tokens"

    def _drop_surplus_chunks(self) -> None:
        """Under the "chunks" rule, take off the empty chunks that the final usage says were no
        tokens: first an empty finish-only last chunk, then empty chunks before the first text."""
        record, arrivals = self.record, self.arrivals
        if record.completion_tokens is None:
            # No usage at all: nothing says whether they were tokens. Servers that send no usage
            # send such chunks as keep-alives and finish markers (the OpenAI protocol's habit).
            surplus = len(arrivals)
        else:
            surplus = len(arrivals) - record.completion_tokens
        if surplus > 0 and self.last_empty_finish:
            arrivals.pop()
            record.tokens_without_text -= 1
            surplus -= 1
        drop = min(surplus, self.leading_empty)
        if drop > 0:
            del arrivals[:drop]
            record.tokens_without_text -= drop
