"""A lean HTTP/1.1 client for the load generator's requests: asyncio protocols over keep-alive
connections, responses parsed by httptools (llhttp, the parser behind uvicorn).

Why not aiohttp here: a measured chunk's time is only as good as the moment the client reads
it. With one task per request, aiohttp's request path costs ~90 us of event-loop time, and when
hundreds of requests start together the loop is busy sending while other streams' chunks wait
in the kernel: 110 ms median TTFT error at 1,000 streams (bench/results/client_overhead.md).
Here a response's bytes are handled in the protocol callback, straight from the selector, and
stamped on arrival; a request is one write of pre-encoded bytes. aiohttp still serves every
control-plane call (probes, tokenizer, accuracy gate), where a millisecond does not matter.

Scope: what an OpenAI-compatible server on this machine needs (POST with a JSON body, chunked,
Content-Length or read-to-close responses, keep-alive). No redirects, proxies or cookies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Protocol
from urllib.parse import urlsplit

import httptools

_clock = time.perf_counter


class ResponseHandler(Protocol):
    """Receives one exchange as it happens. Times are `time.perf_counter()` readings."""

    def on_sent(self, now: float) -> None: ...
    def on_status(self, status: int, reason: str) -> None: ...
    def on_body(self, data: bytes, now: float) -> None: ...
    def on_complete(self, now: float) -> None: ...


class ConnectError(OSError):
    """The server could not be reached (refused, reset during connect, unresolvable)."""


class ServerDisconnected(ConnectionError):
    """The server closed the connection before the response was complete."""


class MalformedResponse(Exception):
    """The bytes from the server are not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._handler: ResponseHandler | None = None
        self._done: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._now = 0.0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end of the body is known
        self._reuse = False
        self._reason = ""

    # -- driven by the pool --------------------------------------------------------------------
    def start(self, request: bytes, handler: ResponseHandler, done: asyncio.Future[None]) -> None:
        self._handler, self._done = handler, done
        self._parser = httptools.HttpResponseParser(self)
        self._headers_done = self._framed = self._reuse = False
        self._reason = ""
        assert self.transport is not None
        self.transport.write(request)
        handler.on_sent(_clock())

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # One clock reading per read: every event in this read arrived by now.
        self._now = _clock()
        if self._parser is None:
            self._fail(MalformedResponse(f"unexpected bytes from an idle connection: {data[:80]!r}"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ or exc)  # the handler's own error (e.g. malformed JSON)
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        if self._done is None or self._done.done():
            return
        if self._headers_done and not self._framed and exc is None:
            # A body without Content-Length or chunking ends when the server closes.
            self.on_message_complete()
            return
        reason = f": {exc}" if exc else ""
        self._fail(ServerDisconnected(f"server closed the connection before the response was complete{reason}"))

    # -- httptools callbacks -------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode(errors="replace")

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None and self._handler is not None
        self._headers_done = True
        self._reuse = self._parser.should_keep_alive()
        self._handler.on_status(self._parser.get_status_code(), self._reason)

    def on_body(self, body: bytes) -> None:
        if body:
            self._handler.on_body(body, self._now)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        handler, done = self._handler, self._done
        self._handler = self._done = self._parser = None
        try:
            handler.on_complete(self._now if self._now else _clock())  # type: ignore[union-attr]
        except Exception as exc:  # the handler's own error (e.g. a body that is not JSON)
            self.abort()
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        if not self._reuse:
            self.abort()
        if done is not None and not done.done():
            done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        done = self._done
        self._handler = self._done = self._parser = None
        self.abort()
        if done is not None and not done.done():
            done.set_exception(exc)


class HttpPool:
    """Keep-alive connections to one server. Connections are opened on demand, so the pool
    grows to the largest number of requests in flight at once and reuses them afterwards."""

    def __init__(self, base_url: str, timeout_s: float | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{base_url}: only http:// and https:// URLs are supported")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        host_header = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        if parts.port is not None:
            host_header = f"{host_header}:{self.port}"
        self._host_header = host_header.encode()
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def encode_post(self, path: str, body: bytes) -> bytes:
        """The bytes of a JSON POST request."""
        return (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: */*\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self._host_header, len(body), body))

    async def request(self, request: bytes, handler: ResponseHandler) -> None:
        """Send `request` and feed the response to `handler`. Raises ConnectError,
        ServerDisconnected, MalformedResponse, TimeoutError or the handler's own exception."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        conn = await self._acquire(loop, deadline)
        done: asyncio.Future[None] = loop.create_future()
        timer = None
        if deadline is not None:
            timer = loop.call_at(deadline, _expire, conn, done, self.timeout_s)
        try:
            conn.start(request, handler, done)
            await done
        except BaseException:
            conn.abort()  # a connection mid-response cannot carry the next request
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not conn.closed:
            self._idle.append(conn)

    async def warm(self, connections: int, batch: int = 64) -> int:
        """Open idle connections until `connections` are ready (connect errors end it early: the
        requests will meet and record them). Returns how many are idle."""
        loop = asyncio.get_running_loop()
        while len(self._idle) < connections:
            wanted = min(batch, connections - len(self._idle))
            opened = await asyncio.gather(*(self._acquire(loop, None, reuse=False) for _ in range(wanted)),
                                          return_exceptions=True)
            self._idle.extend(c for c in opened if isinstance(c, _Connection))
            if any(isinstance(c, BaseException) for c in opened):
                break
        return len(self._idle)

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float | None,
                       reuse: bool = True) -> _Connection:
        while reuse and self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
        try:
            connect = loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self._ssl)
            if deadline is None:
                _, conn = await connect
            else:
                _, conn = await asyncio.wait_for(connect, max(deadline - loop.time(), 0.0))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._all.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _expire(conn: _Connection, done: asyncio.Future[None], timeout_s: float | None) -> None:
    if not done.done():
        conn._fail(TimeoutError(f"no complete response within {timeout_s:g} s"))
