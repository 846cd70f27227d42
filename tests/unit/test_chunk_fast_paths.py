"""The per-chunk fast paths (issue 39) give what the general paths give: the SSE split of whole
events, the typed decode of stream events, and one handler call per socket read."""

import asyncio
import random

import orjson
import pytest

from servesweep.loadgen import exchange as exchange_module
from servesweep.loadgen import http, sse
from servesweep.loadgen.exchange import Exchange
from servesweep.loadgen.records import RequestRecord
from servesweep.loadgen.sse import SSEParser


# --- SSE: whole one-line events split at once ---------------------------------------------------

_LINES = [b"data: {\"a\":1}", b"data: x", b"data:  two spaces", b"data:no-space", b"data: ", b"data:",
          b": keep-alive", b"event: message", b"id: 7", b"retry: 10", b"data: [DONE]", b"<html>"]


def _random_stream(rng: random.Random) -> bytes:
    """Events of random lines, most of them the common one-line `data: ` event, some not."""
    out = []
    for _ in range(rng.randrange(1, 12)):
        lines = [rng.choice(_LINES[:2])] if rng.random() < 0.7 else rng.sample(_LINES, rng.randrange(1, 4))
        end = rng.choice([b"\n", b"\n", b"\n", b"\r\n", b"\r"])
        out.append(end.join(lines) + end + end)
    return b"".join(out)


def _feed_all(parser: SSEParser, pieces: list[bytes]) -> tuple[list[bytes], bytes | None]:
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush(), parser.foreign


def test_sse_fast_path_gives_the_line_parsers_events_for_any_split_of_any_stream(monkeypatch):
    taken = []

    def counted(data: bytes, end: int) -> list[bytes] | None:
        payloads = whole_events(data, end)
        taken.append(payloads is not None)
        return payloads

    whole_events = sse._whole_events
    monkeypatch.setattr(sse, "_whole_events", counted)
    rng = random.Random(39)
    for _ in range(3000):
        stream = _random_stream(rng)
        # Byte by byte: no read ends with a blank line, so the line parser reads it all.
        reference = _feed_all(SSEParser(), [stream[i:i + 1] for i in range(len(stream))])
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 4))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        parser = SSEParser()
        assert _feed_all(parser, pieces) == reference, (stream, cuts)
    assert sum(taken) > 1000 and not all(taken)  # both paths ran, the fast one often


def test_sse_fast_path_keeps_a_split_event_for_the_next_read():
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert parser.feed(b':2}\n\ndata: x\n') == [b'{"b":2}']
    assert parser.feed(b"\ndata:  y\n\n") == [b"x", b" y"]  # SSE strips one space, not two


# --- stream events: the typed decode and the dict path agree ------------------------------------

_EVENTS = [
    '{"id":"c","object":"text_completion","choices":[{"index":0,"text":"a","finish_reason":null}]}',
    '{"choices":[{"text":""}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}',
    '{"choices":[{"text":"b","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}',
    '{"choices":[{"text":"c"}],"usage":{}}',
    '{"choices":[{"text":"c"}],"usage":{"total_tokens":9}}',
    '{"choices":[{"text":"c"}],"usage":{"completion_tokens":null}}',
    '{"choices":[{"text":"c"}],"usage":null}',
    '{"choices":[{"text":"c"}],"usage":0}',
    '{"choices":[{"text":"c"}],"usage":{"prompt_tokens":true,"completion_tokens":2}}',
    '{"choices":[{"text":"c"}],"usage":{"prompt_tokens":5,"completion_tokens":2.0}}',
    '{"choices":[{"text":7}]}',
    '{"choices":[{"text":"d"}, 5]}',
    '{"choices":[5]}',
    '{"choices":{"text":"e"}}',
    '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4}}',
    '{"choices":[{"delta":{"role":"assistant","content":""}}]}',
    '{"choices":[{"delta":{"role":null}}]}',
    '{"choices":[{"delta":{"content":"f"},"finish_reason":null}]}',
    '{"choices":[{"delta":{"content":""}}]}',
    '{"choices":[{"delta":{"content":null}}]}',
    '{"choices":[{"delta":{}}]}',
    '{"choices":[{"delta":{},"finish_reason":"stop"}]}',
    '{"choices":[{"delta":{"content":""},"finish_reason":"stop"}]}',
    '{"choices":[{"delta":{"reasoning_content":"hm"}}]}',
    '{"choices":[{"delta":{"reasoning":"hm","content":null}}]}',
    '{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}',
    '{"choices":[{"delta":{"tool_calls":[]}}]}',
    '{"choices":[{"delta":{"content":5}}]}',
    '{"choices":[{"delta":"g"}]}',
    '{"choices":[{"message":{"content":"h"}}]}',
    '{"choices":[{"index":0}]}',
    '{"error":{"message":"overloaded"}}',
    '{"object":"error","message":"bad request"}',
    '[1,2]',
    'null',
]


def _record_of(events: list[str], keep_text: bool) -> dict:
    record = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0, wire_s=0.0)
    exchange = Exchange(record, 0.0, stream=True, keep_text=keep_text)
    exchange.on_status(200, "OK")
    for i, event in enumerate([*events, "[DONE]"], start=1):
        exchange.on_body(f"data: {event}\n\n".encode(), float(i))
    exchange.on_complete(float(len(events) + 2))
    return record.to_dict()


def test_typed_decode_and_dict_path_give_the_same_record(monkeypatch):
    if exchange_module._decode_typed is None:
        pytest.skip("msgspec is not installed: only the dict path exists")
    rng = random.Random(39)
    streams = [[event] for event in _EVENTS] + [rng.sample(_EVENTS, rng.randrange(1, 8)) for _ in range(400)]
    typed = [_record_of(events, keep_text=True) for events in streams]
    monkeypatch.setattr(exchange_module, "_decode_typed", None)
    assert [_record_of(events, keep_text=True) for events in streams] == typed


def test_typed_decode_takes_the_common_events_and_leaves_the_rest():
    decode = exchange_module._decode_typed
    if decode is None:
        pytest.skip("msgspec is not installed: only the dict path exists")
    assert decode(_EVENTS[0].encode()) is not None and decode(_EVENTS[2].encode()) is not None
    assert decode(_EVENTS[17].encode()) is not None  # a chat delta
    for left in ('{"choices":[{"text":"c"}],"usage":{}}', '{"choices":[{"text":7}]}', '{"choices":[]}',
                 '{"error":{"message":"x"}}', "[DONE]", "null"):
        assert decode(left.encode()) is None, left


# --- http: the frames of one read reach the handler in one call ---------------------------------

class _Collect:
    def __init__(self) -> None:
        self.reads: list[tuple[bytes, float]] = []
        self.status = None

    def on_sent(self, now: float) -> None:
        pass

    def on_status(self, status: int, reason: str) -> None:
        self.status = status

    def on_body(self, data: bytes, now: float) -> None:
        self.reads.append((data, now))

    def on_complete(self, now: float) -> None:
        pass


def _frames(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


def _exchange(handler: _Collect) -> tuple[http._TransportConnection, asyncio.Future]:
    loop = asyncio.new_event_loop()
    conn = http._TransportConnection(http.HttpPool("http://127.0.0.1:9"))
    done = loop.create_future()
    conn._begin(handler, done)
    return conn, done


def test_the_frames_of_one_read_reach_the_handler_in_one_call_with_that_reads_stamp():
    handler = _Collect()
    conn, done = _exchange(handler)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [b"data: {\"n\":%d}\n\n" % i for i in range(6)]
    conn.data_received(head + _frames(*events[:4]))
    first_stamp = conn._now
    conn.data_received(_frames(*events[4:]) + b"0\r\n\r\n")
    assert done.done() and done.exception() is None
    assert [data for data, _ in handler.reads] == [b"".join(events[:4]), b"".join(events[4:])]
    assert handler.reads[0][1] == first_stamp < handler.reads[1][1]


def test_the_events_before_a_malformed_frame_still_reach_the_handler():
    handler = _Collect()
    conn, done = _exchange(handler)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _frames(b"data: 1\n\n")
                       + b"zz\r\nnot a frame")
    assert isinstance(done.exception(), http.MalformedResponse)
    assert [data for data, _ in handler.reads] == [b"data: 1\n\n"]


# --- records: chunk_us in numpy, the digits of the loop it replaced ----------------------------

def test_chunk_us_has_the_digits_of_rounding_each_cumulative_time():
    rng = random.Random(39)
    for trial in range(500):
        t, arrivals = rng.uniform(0, 5000), []
        for _ in range(rng.choice([0, 1, 2, 7, 300])):
            t += rng.choice([0.0, 0.0000005, 0.0000015, rng.expovariate(100)])  # ties round half to even
            arrivals.append(t)
        expected, prev = [], 0
        for t in arrivals:
            now = round(t * 1e6)
            expected.append(now - prev)
            prev = now
        line = RequestRecord(1, "c1", False, 0.0, chunk_arrivals_s=arrivals).encode()
        assert orjson.loads(line)["chunk_us"] == expected, trial
