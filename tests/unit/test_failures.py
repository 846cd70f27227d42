"""One exception -> error-kind map for the asyncio client and the Locust user (loadgen/failures.py)."""

from pathlib import Path

import orjson
import pytest

import servesweep

from servesweep.loadgen.failures import failure_of
from servesweep.loadgen.http import ConnectError, MalformedResponse, ServerDisconnected


@pytest.mark.parametrize("exc,kind", [
    (TimeoutError("no answer"), "timeout"),  # an OSError too: the timeout wins
    (orjson.JSONDecodeError("bad", "x", 0), "stream_error"),
    (ServerDisconnected("server closed the connection"), "stream_error"),  # a ConnectionError too
    (MalformedResponse("bad status line"), "stream_error"),
    (ConnectError("refused"), "connection_error"),
    (ConnectionResetError("reset"), "connection_error"),
    (KeyError("choices"), "stream_error"),
])
def test_each_failure_has_one_kind(exc, kind):
    got, message = failure_of(exc)
    assert got == kind and message


def test_both_load_generators_use_the_map():
    # Read, not imported: importing the Locust user would monkey-patch this test process (gevent).
    package = Path(servesweep.__file__).parent
    for source in (package / "loadgen" / "client.py", package / "locust" / "user.py"):
        text = source.read_text()
        assert "failure_of(exc)" in text and "ERROR_TIMEOUT" not in text, source
