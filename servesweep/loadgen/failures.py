"""What a failed request is recorded as: the exception it ended with -> (error kind, message), one
map for both load generators (the asyncio client, servesweep.loadgen.client, and the Locust user,
servesweep.locust.user), so a record's `error_kind` means the same whichever sent it. Cancellation
is the caller's: each stops in its own way (asyncio.CancelledError, gevent's GreenletExit).
"""

from __future__ import annotations

import orjson

from servesweep.loadgen.http import ConnectError, MalformedResponse, ServerDisconnected
from servesweep.loadgen.records import ERROR_CONNECTION, ERROR_STREAM, ERROR_TIMEOUT
from servesweep.loadgen.sse import EventTooLarge


def failure_of(exc: Exception) -> tuple[str, str]:
    """The error kind and message of a request that ended with `exc`. Checked in this order, since
    the classes overlap (a TimeoutError is an OSError): a timeout, a malformed stream, the server
    cutting the response off or sending a broken one, a connection that failed; anything else met
    while handling a response is a stream error that names it (raised, it would end a closed-loop
    user in silence and leave the record looking ok)."""
    if isinstance(exc, TimeoutError):
        return ERROR_TIMEOUT, f"request timed out ({exc})"
    if isinstance(exc, orjson.JSONDecodeError):
        return ERROR_STREAM, f"malformed JSON in stream: {exc}"
    if isinstance(exc, (ServerDisconnected, MalformedResponse, EventTooLarge)):
        return ERROR_STREAM, str(exc)
    if isinstance(exc, (ConnectError, OSError)):
        return ERROR_CONNECTION, f"{type(exc).__name__}: {exc}"
    return ERROR_STREAM, f"unexpected {type(exc).__name__} while handling the response: {exc}"
