import random

import pytest

from servesweep.loadgen.sse import DONE, SSEParser

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"choices":[{"text":"a"}]}\n\n'
    b"event: message\nid: 7\nretry: 100\n"
    b'data: {"choices":[{"text":"b"}]}\n\n'
    b"\n\n"  # stray blank lines: keep-alives with no data
    b'data:{"choices":[{"text":"c"}]}\n\n'  # no space after the colon
    b"data: line one\ndata: line two\n\n"
    b'data: {"choices":[],"usage":{"completion_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"choices":[{"text":"a"}]}',
    b'{"choices":[{"text":"b"}]}',
    b'{"choices":[{"text":"c"}]}',
    b"line one\nline two",
    b'{"choices":[],"usage":{"completion_tokens":3}}',
    DONE,
]


def feed_in_pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    parser = SSEParser()
    events, last = [], 0
    for cut in sorted(cuts) + [len(stream)]:
        events += parser.feed(stream[last:cut])
        last = cut
    return events + parser.flush()


def test_whole_stream_in_one_read():
    assert feed_in_pieces(STREAM, []) == EXPECTED


def test_byte_by_byte():
    assert feed_in_pieces(STREAM, list(range(1, len(STREAM)))) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_random_fragmentation(seed):
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(STREAM)), rng.randint(1, 30))
    assert feed_in_pieces(STREAM, cuts) == EXPECTED


@pytest.mark.parametrize("seed", range(10))
def test_crlf_line_endings_split_anywhere(seed):
    crlf = STREAM.replace(b"\n", b"\r\n")
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(crlf)), 40)
    assert feed_in_pieces(crlf, cuts) == EXPECTED


def test_crlf_split_between_cr_and_lf():
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [b"x"]


def test_unterminated_last_event_is_flushed():
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.flush() == [DONE]


def test_comment_only_stream_yields_nothing():
    parser = SSEParser()
    assert parser.feed(b": ping\n\n: ping\n\n") == []
    assert parser.flush() == []
