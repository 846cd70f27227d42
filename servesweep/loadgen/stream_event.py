"""The fields of a streamed event that the measurement reads, decoded straight into slots.

A vLLM token event is ~250 bytes of JSON of which the exchange reads four things: the first
choice's text (or chat delta), its finish_reason, and the usage counts. Decoding it into a dict
(orjson) builds every key and value, and each field then needs a type check in Python; msgspec
decodes into the typed structs below, skipping every other field and checking the types in C:
2.5-3x less time for decode and checks than orjson and dict lookups (py-spy and timeit on the
chunk-rate run, docs/client-overhead.md).

Only the common shape comes this way: an event with a non-empty `choices` list whose first entry
is an object of the types below, and `usage` absent, null, or an object with at least one of its
two counts. `decode` returns None for anything else (a type that does not fit, an error event,
the final usage-only event, `[DONE]`, JSON it cannot read), and the exchange then reads the event
as a dict (servesweep.loadgen.exchange), where every rule about malformed events lives: so both
paths give the same record. Where msgspec is not installed, `decode` is None and every event is
read as a dict. The one difference: fields the measurement does not read are skipped, so an event
whose `id` holds bytes that are not UTF-8 (or a number out of float range) is read here, where
orjson rejected the whole event.
"""

from __future__ import annotations

from typing import Any, Callable

try:
    import msgspec
except ImportError:  # the dict path reads every event
    msgspec = None  # type: ignore[assignment]

if msgspec is not None:
    UNSET: Any = msgspec.UNSET
    # gc=False: decoded JSON cannot form a reference cycle, so the collector need not track (nor be
    # triggered by) the two or three structs every event makes.

    class Usage(msgspec.Struct, gc=False):
        # UNSET when the key is absent: `{}` (ignored as no usage) is then told from `{"total_tokens": 5}`.
        prompt_tokens: int | None | msgspec.UnsetType = msgspec.UNSET
        completion_tokens: int | None | msgspec.UnsetType = msgspec.UNSET

    class Delta(msgspec.Struct, gc=False):
        content: str | None = None
        role: Any = msgspec.UNSET  # a role header is told by the key, whatever its value
        reasoning_content: Any = None
        reasoning: Any = None
        tool_calls: Any = None

    class Choice(msgspec.Struct, gc=False):
        text: str | None = None
        delta: Delta | None = None
        message: Delta | None = None  # a whole message in one chunk
        finish_reason: Any = None

    class Event(msgspec.Struct, gc=False):
        choices: list[Choice] | msgspec.UnsetType = msgspec.UNSET
        usage: Usage | None | msgspec.UnsetType = msgspec.UNSET

    _decode_event = msgspec.json.Decoder(Event).decode
    _Unreadable = msgspec.DecodeError  # ValidationError is one

    def _decode(data: bytes) -> Event | None:
        try:
            event = _decode_event(data)
        except _Unreadable:
            return None
        if not event.choices:
            return None
        usage = event.usage
        if usage and usage.prompt_tokens is UNSET and usage.completion_tokens is UNSET:
            return None
        return event

    decode: Callable[[bytes], Any] | None = _decode
else:
    UNSET = object()
    decode = None
