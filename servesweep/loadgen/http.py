"""A lean HTTP/1.1 client for the load generator's requests: keep-alive connections whose socket
reads it owns, responses parsed by httptools (llhttp, the parser behind uvicorn), and the time
each read's bytes reached this machine taken from the kernel.

Why not aiohttp here: a measured chunk's time is only as good as the moment the client reads
it. With one task per request, aiohttp's request path costs ~90 us of event-loop time, and when
hundreds of requests start together the loop is busy sending while other streams' chunks wait
in the kernel: 110 ms median TTFT error at 1,000 streams (bench/results/client_overhead.md).
Here a response's bytes are handled in a reader callback, straight from the selector; a request
is one write of pre-encoded bytes. aiohttp still serves every control-plane call (probes,
tokenizer, accuracy gate), where a millisecond does not matter.

Times. Every time given to a `ResponseHandler` is on the `time.perf_counter()` timeline.
- Sent: read just BEFORE the request's bytes are handed to the socket, so a client descheduled
  right after the write does not push the send time (and so shrink TTFT) by the time it was off
  the CPU.
- Arrival ("kernel" clock): plain-http sockets ask for SO_TIMESTAMPNS and are read with
  `recvmsg`, so every read carries the kernel's receive time of its bytes, taken when they came
  off the wire (on loopback: when the server wrote them), whether or not this process was on a
  CPU then. The stamp is CLOCK_REALTIME; `_RealtimeMap` moves it onto the perf_counter timeline
  with an offset from paired clock readings (the pair read closest together), measured again
  every second so NTP slew cannot accumulate.
  The limit, from TCP itself: the kernel keeps one stamp per socket buffer (skb), and a read's
  stamp is that of the NEWEST skb it took bytes from. Worse, a segment that arrives while earlier
  ones wait unread is merged into the skb before it (tcp_try_coalesce), which then carries the
  newest stamp; a FIN (the server closing) merges the same way. So bytes that waited unread behind
  later bytes of the same connection share the later arrival's stamp: an upper bound on their
  arrival, not their own time. In practice: a chunk read before its stream's next chunk (or the
  server's FIN) arrives keeps its exact arrival time, however long it waited in the kernel; that
  holds while the client is late by less than one inter-token gap. Chunks that pile up while the
  client is off the CPU for longer share one stamp, so the gaps between them read exactly 0 (a
  gap of 0.0 is the sign), and the last of them is still exact (on keep-alive connections, where
  no FIN follows). Reads are `read_size` bytes at most (64 KiB by default): since the kernel
  merges queued segments and keeps the newest stamp, smaller reads separate no more stamps in
  practice, and with 4 KiB reads the chunk rate one client core sustains was 178k/242k chunks/s
  at 64/256 streams against 259k/260k with 64 KiB (bench/client_overhead.py --quick, 2026-11-23).
- Arrival ("present clock"): where the platform gives no stamp (no SO_TIMESTAMPNS, the option
  refused, no stamp on a read) or for https, the clock is read when the bytes are read.
  `HttpPool.clock_source` says which clock the run's arrivals came from.
https keeps asyncio's TLS transport (it reads the socket itself), so its arrivals use the
present clock.

Scope: what an OpenAI-compatible server on this machine needs (POST with a JSON body, chunked,
Content-Length or read-to-close responses, keep-alive). No redirects (a 3xx is an answer like any
other: the request fails with its status), proxies or cookies.

A connection reset while bytes wait unread (the server's RST arriving with the last chunks) must
end the exchange at once under every event loop. asyncio's selector loop reports EPOLLERR as
readable and the reader callback meets the error. uvloop (libuv) does not: on EPOLLERR it stops
the fd's poll handle, runs the reader once and never again, so the error behind the data was
never read and the request hung until its timeout. Under a loop that is not a selector loop the
pool therefore keeps a second epoll set (`_ErrorWatch`) holding every socket for EPOLLERR/EPOLLHUP
only; it is itself one fd the loop reads, costs nothing while no socket fails (one epoll_ctl per
connection opened and closed, none per read), and when a socket fails, its connection is read to
the error there.
"""

from __future__ import annotations

import asyncio
import os
import platform
import select
import socket
import ssl
import struct
import sys
import time
from typing import Callable, Protocol
from urllib.parse import urlsplit

import httptools

from servesweep import auth

_clock = time.perf_counter

CLOCK_KERNEL = "kernel"
CLOCK_PRESENT = "present clock (no SO_TIMESTAMPNS)"
CLOCK_PRESENT_TLS = "present clock (https: TLS reads through asyncio's transport)"


def _timestamp_option() -> int | None:
    """SO_TIMESTAMPNS where its value is the generic Linux one (Python does not export it)."""
    if sys.platform != "linux" or platform.machine().lower().startswith(("alpha", "mips", "parisc", "sparc")):
        return None
    return 35  # SO_TIMESTAMPNS (= SO_TIMESTAMPNS_OLD): a struct timespec of two native longs


SO_TIMESTAMPNS = _timestamp_option()
_TIMESPEC = struct.Struct("@ll")
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
DEFAULT_READ_SIZE = 65536
RESYNC_INTERVAL_S = 1.0
_PAIRS = 7  # paired clock readings per offset measurement; the tightest pair wins


def _enable_kernel_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received bytes; False where it cannot."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class _StampingSwitch:
    """Linux turns receive stamping on for the whole system lazily, from a work queue, when the
    first socket asks for it, and off again when the last such socket closes: bytes that arrive
    before the switch has flipped come without a stamp. One socket holding the option for the
    life of the process keeps it on across pools; `wait_on` waits, once per process and for
    `limit_s` at most, until a datagram sent to that socket comes back stamped when it was sent
    rather than when it was read (the kernel stamps an unstamped datagram at read time)."""

    sock: socket.socket | None = None
    tried = False
    confirmed = False

    @classmethod
    async def wait_on(cls, limit_s: float = 0.2) -> None:
        if cls.tried or SO_TIMESTAMPNS is None:
            return
        cls.tried = True
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            sock.close()
            return
        cls.sock = sock
        deadline = _clock() + limit_s
        while not cls.confirmed and _clock() < deadline:
            sent = time.time_ns()
            try:
                sock.sendto(b".", sock.getsockname())
                await asyncio.sleep(0.002)
                _, anc, _, _ = sock.recvmsg(1, _ANC_SPACE)
            except OSError:
                return
            if anc and len(anc[0][2]) == _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack(anc[0][2])
                cls.confirmed = sec * 1_000_000_000 + nsec - sent < 1_000_000


class _RealtimeMap:
    """Maps CLOCK_REALTIME nanoseconds (the kernel's receive stamps) onto perf_counter seconds:
    perf = (realtime_ns + offset_ns) * 1e-9, with offset_ns = perf_counter_ns - time_ns read as
    close together as the machine allows. `next_sync` is the perf_counter time of the next
    measurement."""

    __slots__ = ("offset_ns", "next_sync")

    def __init__(self) -> None:
        self.offset_ns = 0
        self.next_sync = 0.0
        self.sync()

    def sync(self) -> None:
        best_gap = best_offset = None
        for _ in range(_PAIRS):
            before = time.perf_counter_ns()
            real = time.time_ns()
            after = time.perf_counter_ns()
            if best_gap is None or after - before < best_gap:
                best_gap, best_offset = after - before, (before + after) // 2 - real
        self.offset_ns = best_offset  # type: ignore[assignment]
        self.next_sync = _clock() + RESYNC_INTERVAL_S


class _ErrorWatch:
    """The sockets of one pool in an epoll set of their own, for EPOLLERR and EPOLLHUP only (both
    reported whatever the mask asks, so the mask is 0): the loop reads the set's fd, and a socket
    that failed is read until the error surfaces (see the module doc: uvloop stops polling a socket
    after EPOLLERR). Only made where the loop is not asyncio's selector loop and epoll exists."""

    __slots__ = ("_epoll", "_loop", "_conns")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._loop = loop
        self._conns: dict[int, _SocketConnection] = {}
        loop.add_reader(self._epoll.fileno(), self._on_event)

    @staticmethod
    def wanted(loop: asyncio.AbstractEventLoop) -> bool:
        return hasattr(select, "epoll") and not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)

    def add(self, conn: _SocketConnection) -> None:
        try:
            self._epoll.register(conn._fd, 0)
        except OSError:
            return
        self._conns[conn._fd] = conn

    def discard(self, conn: _SocketConnection) -> None:
        if self._conns.get(conn._fd) is conn:
            del self._conns[conn._fd]
            try:
                self._epoll.unregister(conn._fd)
            except OSError:
                pass

    def _on_event(self) -> None:
        try:
            events = self._epoll.poll(0)
        except OSError:
            return
        for fd, _mask in events:
            conn = self._conns.get(fd)
            if conn is None:
                continue
            # Read what is left, then the error (or the end): bounded, since the kernel holds at
            # most a receive buffer of bytes for this socket.
            for _ in range(4096):
                if conn.closed:
                    break
                if not conn._on_readable():
                    break
            if not conn.closed:
                code = conn._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                conn._lost(OSError(code, f"connection failed: {os.strerror(code)}") if code else None)

    def close(self) -> None:
        if self._epoll.closed:
            return
        try:
            self._loop.remove_reader(self._epoll.fileno())
        except (RuntimeError, ValueError):  # the loop is already closed
            pass
        self._epoll.close()
        self._conns.clear()


class ResponseHandler(Protocol):
    """Receives one exchange as it happens. Times are on the `time.perf_counter()` timeline:
    `on_sent` gets the reading taken just before the request was written, `on_body` and
    `on_complete` the arrival time of the read that carried the bytes (see the module doc)."""

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


class StallTimeout(TimeoutError):
    """A response stopped mid-stream: no byte for the stall timeout after its first token."""


class ParserCallbacks:
    """The httptools callbacks every client of servesweep shares (this module's and the Locust
    user's gevent connection), so both frame a response and stamp its body the same way: the
    status reason kept, whether the body's end is known from its headers (`_framed`), and body
    bytes handed to the handler with the stamp of the read they came in (`_now`).

    The body of one read reaches the handler in ONE call, after the parser has taken the whole read
    (`deliver_body`): a streamed response has one HTTP chunk per event, so per-frame handler calls
    cost a chain of Python calls for every event. httptools' own per-frame callback is `on_body`,
    bound by `begin_body` to the `append` of a list: a C call with no Python frame."""

    __slots__ = ()
    _reason: str
    _framed: bool
    _now: float
    _handler: ResponseHandler | None
    _body: list[bytes]  # the body pieces of the read being parsed
    on_body: Callable[[bytes], None]  # httptools' per-frame callback: self._body.append

    def begin_body(self) -> None:
        """Before a new parser is made for an exchange (httptools looks `on_body` up then)."""
        self._body = body = []
        self.on_body = body.append

    def deliver_body(self) -> None:
        """Hand the body bytes the last read carried to the handler, stamped with that read."""
        body = self._body
        if body:
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            self._handler.on_body(data, self._now)  # type: ignore[union-attr]

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode(errors="replace")

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True
        elif lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            # Requests ask for `Accept-Encoding: identity`; compressed bytes would be parsed as events.
            raise MalformedResponse(f"the server sent a {value.decode(errors='replace')}-encoded response although "
                                    "servesweep asked for none (Accept-Encoding: identity); turn off compression "
                                    "of the API's responses in the server or proxy")


class _Exchange(ParserCallbacks):
    """One keep-alive connection carrying one exchange at a time: the httptools callbacks and the
    exchange's state. Subclasses move the bytes and call `_feed` and `_lost`."""

    __slots__ = ()

    def _init_exchange(self, pool: HttpPool) -> None:
        self._pool = pool
        self.closed = False
        self._handler: ResponseHandler | None = None
        self._done: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._now = 0.0
        self._sent = 0.0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end of the body is known
        self._reuse = False
        self._reason = ""
        self.begin_body()

    def _begin(self, handler: ResponseHandler, done: asyncio.Future[None]) -> None:
        self._handler, self._done = handler, done
        self.begin_body()
        self._parser = httptools.HttpResponseParser(self)
        self._headers_done = self._framed = self._reuse = False
        self._reason = ""

    def _writing(self) -> bool:
        return False

    def abort(self) -> None:
        raise NotImplementedError

    def _feed(self, data: bytes | memoryview) -> None:
        if self._parser is None:
            self._fail(MalformedResponse(f"unexpected bytes from an idle connection: {bytes(data[:80])!r}"))
            return
        error: BaseException | None = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ or exc)  # the handler's own error (e.g. malformed JSON)
            return
        except httptools.HttpParserError as exc:
            error = MalformedResponse(f"malformed HTTP response: {exc}")
        if self._body:
            try:
                self.deliver_body()  # the events before a malformed frame still count
            except Exception as exc:  # noqa: BLE001 - the handler's own error, as above
                error = exc
        if error is not None:
            self._fail(error)

    def _lost(self, exc: Exception | None) -> None:
        """The connection ended (EOF when `exc` is None)."""
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

    # -- httptools callbacks (on_status, on_header, on_body: ParserCallbacks) -------------------
    def on_headers_complete(self) -> None:
        assert self._parser is not None and self._handler is not None
        self._headers_done = True
        self._reuse = self._parser.should_keep_alive()
        self._handler.on_status(self._parser.get_status_code(), self._reason)

    def on_message_complete(self) -> None:
        self.deliver_body()
        handler, done = self._handler, self._done
        self._handler = self._done = self._parser = None
        try:
            handler.on_complete(self._now if self._now else _clock())  # type: ignore[union-attr]
        except Exception as exc:  # the handler's own error (e.g. a body that is not JSON)
            self.abort()
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        if not self._reuse or self._writing():  # a request still half-written cannot be followed
            self.abort()
        if done is not None and not done.done():
            done.set_result(None)

    def _in_flight(self) -> bool:
        return self._done is not None and not self._done.done()

    def _finish_at_end_of_stream(self) -> None:
        """The handler has seen the stream's last event but the server keeps the HTTP message open:
        the exchange is complete as of the last read; the connection, mid-message, is closed."""
        handler, done = self._handler, self._done
        self._handler = self._done = self._parser = None
        self.abort()
        try:
            handler.on_complete(self._now if self._now else _clock())  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the handler's own error, as in on_message_complete
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        if done is not None and not done.done():
            done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        done = self._done
        self._handler = self._done = self._parser = None
        self.abort()
        if done is not None and not done.done():
            done.set_exception(exc)


class _SocketConnection(_Exchange):
    """Plain http: a non-blocking socket read in a loop reader callback with `recvmsg_into`, so
    each read comes with the kernel's receive stamp."""

    __slots__ = ("_pool", "closed", "_handler", "_done", "_parser", "_now", "_sent", "_headers_done",
                 "_framed", "_reuse", "_reason", "_body", "on_body", "_loop", "_sock", "_fd", "_pending")

    def __init__(self, pool: HttpPool, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._init_exchange(pool)
        self._loop, self._sock, self._fd = loop, sock, sock.fileno()
        self._pending: memoryview | None = None  # request bytes the socket did not take yet
        loop.add_reader(self._fd, self._on_readable)
        if pool._error_watch is not None:
            pool._error_watch.add(self)

    def start(self, request: bytes, handler: ResponseHandler, done: asyncio.Future[None]) -> None:
        self._begin(handler, done)
        now = _clock()  # before the write: time off the CPU after it must not count as the server's
        try:
            written = self._sock.send(request)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self._lost(exc)
            return
        self._sent = now
        handler.on_sent(now)
        if written < len(request) and not self.closed:
            self._pending = memoryview(request)[written:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _writing(self) -> bool:
        return self._pending is not None

    def _on_writable(self) -> None:
        try:
            written = self._sock.send(self._pending)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        rest = self._pending[written:]  # type: ignore[index]
        if rest:
            self._pending = rest
        else:
            self._pending = None
            self._loop.remove_writer(self._fd)

    def _on_readable(self) -> bool:
        """Read once; False when there was nothing to read."""
        pool = self._pool
        try:
            n, anc, _flags, _addr = self._sock.recvmsg_into(pool._read_views, _ANC_SPACE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._lost(exc)
            return True
        if not n:
            self._lost(None)
            return True
        # The present clock: the fallback, and the bound a kernel stamp must be within.
        now = _clock()
        clock = pool._realtime
        if now > clock.next_sync:
            clock.sync()
        stamp = -1.0
        if anc:
            cdata = anc[0][2]  # the one control message asked for: SCM_TIMESTAMPNS
            if len(cdata) == _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack(cdata)
                stamp = (sec * 1_000_000_000 + nsec + clock.offset_ns) * 1e-9
        if self._sent <= stamp <= now:
            now = stamp
            pool._kernel_reads += 1
        else:
            pool._present_reads += 1
            if stamp >= 0.0:  # a stamp outside what is possible: the wall clock was stepped
                clock.sync()
        self._now = now
        self._feed(pool._read_view[:n])
        return True

    def _release(self) -> None:
        if self._sock.fileno() != -1:
            if self._pool._error_watch is not None:
                self._pool._error_watch.discard(self)
            self._loop.remove_reader(self._fd)
            if self._pending is not None:
                self._loop.remove_writer(self._fd)
            self._sock.close()
        self._pending = None

    def _lost(self, exc: Exception | None) -> None:
        self._release()
        super()._lost(exc)

    def abort(self) -> None:
        self._release()
        if not self.closed:
            self.closed = True
            self._pool._forget(self)


class _TransportConnection(_Exchange, asyncio.Protocol):
    """https: asyncio's TLS transport reads the socket, so arrivals use the present clock."""

    def __init__(self, pool: HttpPool) -> None:
        self._init_exchange(pool)
        self.transport: asyncio.Transport | None = None

    def start(self, request: bytes, handler: ResponseHandler, done: asyncio.Future[None]) -> None:
        self._begin(handler, done)
        assert self.transport is not None
        now = _clock()
        self._sent = now
        self.transport.write(request)
        handler.on_sent(now)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._now = _clock()
        self._pool._present_reads += 1
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)


_Connection = _SocketConnection | _TransportConnection


class HttpPool:
    """Keep-alive connections to one server. Connections are opened on demand, so the pool
    grows to the largest number of requests in flight at once and reuses them afterwards.
    `read_size` caps the bytes one socket read takes (each read gets one arrival stamp)."""

    def __init__(self, base_url: str, timeout_s: float | None = None, read_size: int = DEFAULT_READ_SIZE) -> None:
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
        self._auth_lines = auth.current().wire()  # the run's credentials, in every request (servesweep.auth)
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._addresses: list[tuple] | None = None
        # One read buffer for every connection: a read is parsed (and its bytes copied out by
        # httptools) before the loop runs the next callback.
        self._read_buffer = bytearray(read_size)
        self._read_view = memoryview(self._read_buffer)
        self._read_views = [self._read_view]
        self._realtime = _RealtimeMap()
        self._stamps_refused = False
        self._kernel_reads = 0
        self._present_reads = 0
        self._error_watch: _ErrorWatch | None = None  # made with the first socket, where the loop needs it

    @property
    def clock_source(self) -> str:
        """Which clock stamped the arrivals so far: "kernel" (every read carried the kernel's
        receive time), "present clock (...)" saying why not, or "kernel (present clock for N of
        M reads)" when some reads came without a usable stamp."""
        if self._ssl is not None:
            return CLOCK_PRESENT_TLS
        if self._present_reads == 0:
            return CLOCK_PRESENT if self._stamps_refused or SO_TIMESTAMPNS is None else CLOCK_KERNEL
        if self._kernel_reads == 0:
            return CLOCK_PRESENT
        total = self._kernel_reads + self._present_reads
        return f"{CLOCK_KERNEL} (present clock for {self._present_reads} of {total} reads)"

    def encode_post(self, path: str, body: bytes) -> bytes:
        """The bytes of a JSON POST request."""
        return (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: */*\r\n"
                b"Accept-Encoding: identity\r\n%sContent-Length: %d\r\n\r\n%s"
                % (path.encode(), self._host_header, self._auth_lines, len(body), body))

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

    def activity(self) -> tuple[int, float]:
        """(exchanges in flight, the latest perf_counter moment any of them sent or received
        bytes; 0.0 when none is in flight). A scan of the pool's connections: for a watchdog that
        runs every second or so, not for the hot path."""
        count, latest = 0, 0.0
        for conn in self._all:
            if conn._in_flight():
                count += 1
                moment = conn._now if conn._now > conn._sent else conn._sent
                if moment > latest:
                    latest = moment
        return count, latest

    def finish_held_open(self, quiet_s: float) -> int:
        """Complete the exchanges whose handler has seen the end of its stream (a true `done`
        attribute: the SSE `data: [DONE]`) while the server, `quiet_s` later, still holds the HTTP
        message open (no last chunk, no close). Returns how many were completed."""
        now = _clock()
        held = [conn for conn in self._all if conn._in_flight() and getattr(conn._handler, "done", False)
                and now - conn._now >= quiet_s]
        for conn in held:
            conn._finish_at_end_of_stream()
        return len(held)

    def expire_stalled(self, stall_s: float) -> int:
        """Fail the exchanges whose stream has begun (the handler has token `arrivals`) and then
        received no byte for `stall_s`: a server that stopped mid-answer is reported as a stall
        then, not at the whole request's timeout. Returns how many. A scan: for the watchdog."""
        now = _clock()
        stalled = [conn for conn in self._all if conn._in_flight() and getattr(conn._handler, "arrivals", None)
                   and now - conn._now >= stall_s]
        for conn in stalled:
            conn._fail(StallTimeout(f"stalled: no bytes for {stall_s:g} s after the stream had begun "
                                    "(the stall timeout, --stall-timeout)"))
        return len(stalled)

    async def warm(self, connections: int, batch: int = 64) -> int:
        """Open idle connections until `connections` are ready (connect errors end it early: the
        requests will meet and record them). Returns how many are idle."""
        loop = asyncio.get_running_loop()
        while len(self._idle) < connections:
            wanted = min(batch, connections - len(self._idle))
            opened = await asyncio.gather(*(self._acquire(loop, None, reuse=False) for _ in range(wanted)),
                                          return_exceptions=True)
            self._idle.extend(c for c in opened if isinstance(c, _Exchange))
            if any(isinstance(c, BaseException) for c in opened):
                break
        return len(self._idle)

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float | None,
                       reuse: bool = True) -> _Connection:
        while reuse and self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        try:
            connect = self._connect(loop)
            if deadline is None:
                conn = await connect
            else:
                conn = await asyncio.wait_for(connect, max(deadline - loop.time(), 0.0))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._all.add(conn)
        return conn

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self._ssl is not None:
            _, conn = await loop.create_connection(lambda: _TransportConnection(self), self.host, self.port,
                                                   ssl=self._ssl)
            return conn
        await _StampingSwitch.wait_on()
        if self._error_watch is None and _ErrorWatch.wanted(loop):
            self._error_watch = _ErrorWatch(loop)
        if self._addresses is None:
            self._addresses = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _, address in self._addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not _enable_kernel_stamps(sock):
                    self._stamps_refused = True
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:  # cancelled (the connect timed out)
                sock.close()
                raise
            return _SocketConnection(self, loop, sock)
        raise error or OSError(f"no address for {self.host}")

    def _forget(self, conn: _Exchange) -> None:
        self._all.discard(conn)  # type: ignore[arg-type]

    async def close(self) -> None:
        for conn in list(self._all):  # an exchange in flight fails; an idle connection just closes
            conn._fail(ServerDisconnected("connection closed by the client before the response was complete"))
        self._idle.clear()
        self._all.clear()
        if self._error_watch is not None:
            self._error_watch.close()
            self._error_watch = None
        await asyncio.sleep(0)  # let the TLS transports run their connection_lost callbacks

    async def __aenter__(self) -> HttpPool:
        if self._ssl is None:
            await _StampingSwitch.wait_on()  # before any request, not in the first one's time
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _expire(conn: _Exchange, done: asyncio.Future[None], timeout_s: float | None) -> None:
    if not done.done():
        conn._fail(TimeoutError(f"no complete response within {timeout_s:g} s"))
