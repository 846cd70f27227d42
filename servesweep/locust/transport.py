"""One keep-alive HTTP/1.1 connection on a gevent socket, for Locust users.

Why not Locust's clients: FastHttpUser (geventhttpclient) hands a streamed body back only once
`chunk_size` bytes have accumulated, so `iter_content(4096)` returns a whole short stream in one
piece at its end and every chunk gets the same timestamp; HttpUser (requests/urllib3) delivers
HTTP chunks as they arrive but spends several Python calls per chunk. This connection does what
`servesweep run` does (servesweep.loadgen.http): every read from the socket is stamped with one
`time.perf_counter()` reading the moment it returns, parsed by httptools (llhttp), and its body
bytes go straight to the response handler (an `Exchange`), so both tools time chunks by the same
rule. A request is one `sendall` of bytes encoded in advance.

Errors are the asyncio client's classes (ConnectError, ServerDisconnected, MalformedResponse), so a
record's `error_kind` means the same thing in both tools.
"""

from __future__ import annotations

import socket
import ssl
import time
from urllib.parse import urlsplit

import httptools

from servesweep.loadgen.http import (ConnectError, MalformedResponse, ParserCallbacks, ResponseHandler,
                                     ServerDisconnected)

_clock = time.perf_counter
READ_SIZE = 1 << 16


class GeventConnection(ParserCallbacks):
    """A keep-alive connection to one server, one exchange at a time, reopened when closed.

    Under Locust, `socket` is gevent's (Locust monkey-patches on import), so a blocking `recv`
    yields to the other users' greenlets until bytes arrive.
    """

    __slots__ = ("host", "port", "tls", "connect_timeout_s", "sock", "_handler", "_parser", "_now",
                 "_headers_done", "_framed", "_complete", "_reason", "_keep_alive", "_body", "on_body")

    def __init__(self, base_url: str, connect_timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{base_url}: only http:// and https:// URLs are supported")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.connect_timeout_s = connect_timeout_s
        self.sock: socket.socket | None = None
        self._handler: ResponseHandler | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._now = 0.0
        self._headers_done = self._framed = self._complete = self._keep_alive = False
        self._reason = ""
        self.begin_body()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock.settimeout(None)  # the request's own deadline (gevent.Timeout) bounds every read
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def request(self, data: bytes, handler: ResponseHandler) -> None:
        """Send `data` (a whole HTTP request) and feed the response to `handler` as it arrives.
        Raises ConnectError, ServerDisconnected, MalformedResponse or the handler's own error;
        on any exception (a timeout or a kill included) the connection is closed, since one
        left mid-response cannot carry the next request."""
        sock = self.sock
        if sock is None:
            sock = self.sock = self._connect()
        self._handler = handler
        self.begin_body()
        self._parser = parser = httptools.HttpResponseParser(self)
        self._headers_done = self._framed = self._complete = self._keep_alive = False
        self._reason = ""
        ok = False
        try:
            try:
                sock.sendall(data)
            except OSError as exc:
                raise ServerDisconnected(
                    f"server closed the connection before the response was complete: {exc}") from exc
            handler.on_sent(_clock())
            recv = sock.recv
            while not self._complete:
                try:
                    chunk = recv(READ_SIZE)
                except OSError as exc:
                    raise ServerDisconnected(
                        f"server closed the connection before the response was complete: {exc}") from exc
                # One clock reading per read: every event in this read arrived by now.
                self._now = _clock()
                if not chunk:
                    if self._headers_done and not self._framed:
                        # A body without Content-Length or chunking ends when the server closes.
                        self._keep_alive = False
                        self.on_message_complete()
                        break
                    raise ServerDisconnected("server closed the connection before the response was complete")
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserCallbackError as exc:
                    raise (exc.__context__ or exc) from None  # the handler's own error (malformed JSON)
                except httptools.HttpParserError as exc:
                    self.deliver_body()  # the events before a malformed frame still count
                    raise MalformedResponse(f"malformed HTTP response: {exc}") from None
                self.deliver_body()
            ok = True
        finally:
            self._handler = self._parser = None
            if not ok or not self._keep_alive:
                self.close()

    # -- httptools callbacks (on_status, on_header, on_body: ParserCallbacks) -------------------
    def on_headers_complete(self) -> None:
        parser, handler = self._parser, self._handler
        assert parser is not None and handler is not None
        self._headers_done = True
        self._keep_alive = parser.should_keep_alive()
        handler.on_status(parser.get_status_code(), self._reason)

    def on_message_complete(self) -> None:
        self.deliver_body()
        self._complete = True
        self._handler.on_complete(self._now or _clock())  # type: ignore[union-attr]
