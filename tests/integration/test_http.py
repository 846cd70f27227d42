"""The load generator's HTTP/1.1 client against raw servers that frame responses every legal way,
and some illegal ones."""

import asyncio

import pytest

from servesweep import auth
from servesweep.loadgen.http import ConnectError, HttpPool, MalformedResponse, ServerDisconnected


class Collect:
    def __init__(self):
        self.sent = None
        self.status = None
        self.reason = None
        self.reads: list[tuple[bytes, float]] = []
        self.completed = None

    def on_sent(self, now):
        self.sent = now

    def on_status(self, status, reason):
        self.status, self.reason = status, reason

    def on_body(self, data, now):
        self.reads.append((data, now))

    def on_complete(self, now):
        self.completed = now

    @property
    def body(self):
        return b"".join(d for d, _ in self.reads)


async def serve(respond):
    """A server whose `respond(reader, writer)` writes raw bytes for each request it reads."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                if await respond(reader, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def test_chunked_stream_is_delivered_as_it_arrives_and_the_connection_reused():
    async def respond(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    server, url, connections = await serve(respond)
    async with server, HttpPool(url, timeout_s=5) as pool:
        for _ in range(3):
            got = Collect()
            await pool.request(pool.encode_post("/v1/completions", b"{}"), got)
            assert got.status == 200 and got.reason == "OK"
            assert got.body == b"firstsecond"
            # Each read is stamped when it arrived, not when the response ended.
            assert got.reads[-1][1] - got.reads[0][1] >= 0.04
            assert got.sent <= got.reads[0][1] <= got.completed
    assert len(connections) == 1  # keep-alive: three requests, one connection


async def test_content_length_and_read_to_close_bodies():
    async def with_length(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\n{\"a\":1}")

    async def until_close(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    for respond, status, body in ((with_length, 400, b'{"a":1}'), (until_close, 200, b"all of it")):
        server, url, _ = await serve(respond)
        async with server, HttpPool(url, timeout_s=5) as pool:
            got = Collect()
            await pool.request(pool.encode_post("/x", b"{}"), got)
            assert (got.status, got.body) == (status, body) and got.completed is not None


async def test_server_closing_mid_response_is_a_disconnect():
    async def respond(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        return False

    server, url, _ = await serve(respond)
    async with server, HttpPool(url, timeout_s=5) as pool:
        got = Collect()
        with pytest.raises(ServerDisconnected, match="before the response was complete"):
            await pool.request(pool.encode_post("/x", b"{}"), got)
        assert got.body == b"first"  # what did arrive was delivered


async def test_garbage_instead_of_http_is_named():
    async def respond(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    server, url, _ = await serve(respond)
    async with server, HttpPool(url, timeout_s=5) as pool:
        with pytest.raises(MalformedResponse, match="malformed HTTP response"):
            await pool.request(pool.encode_post("/x", b"{}"), Collect())


async def test_handler_errors_propagate_and_drop_the_connection():
    async def respond(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    class FailingBody(Collect):
        def on_body(self, data, now):
            raise ValueError("bad chunk")

    class FailingEnd(Collect):
        def on_complete(self, now):
            raise ValueError("bad body")

    server, url, connections = await serve(respond)
    async with server, HttpPool(url, timeout_s=5) as pool:
        with pytest.raises(ValueError, match="bad chunk"):
            await pool.request(pool.encode_post("/x", b"{}"), FailingBody())
        with pytest.raises(ValueError, match="bad body"):  # raised, not left to the timeout
            await asyncio.wait_for(pool.request(pool.encode_post("/x", b"{}"), FailingEnd()), 2)
        got = Collect()
        await pool.request(pool.encode_post("/x", b"{}"), got)
        assert got.body == b"ok"
    assert len(connections) == 3  # a connection whose exchange failed is not reused


async def test_timeout_and_refused_connection():
    async def silent(reader, writer):
        await asyncio.sleep(10)

    server, url, _ = await serve(silent)
    async with server, HttpPool(url, timeout_s=0.2) as pool:
        with pytest.raises(TimeoutError, match="0.2 s"):
            await pool.request(pool.encode_post("/x", b"{}"), Collect())

    port = server.sockets[0].getsockname()[1] if server.sockets else None
    server.close()
    await server.wait_closed()
    async with HttpPool(f"http://127.0.0.1:{port or 9}", timeout_s=2) as pool:
        with pytest.raises(ConnectError, match="cannot connect to 127.0.0.1"):
            await pool.request(pool.encode_post("/x", b"{}"), Collect())


def test_request_bytes_and_url_checks():
    pool = HttpPool("http://127.0.0.1:8000/prefix")
    assert pool.encode_post("/v1/completions", b'{"a":1}') == (
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Accept: */*\r\nAccept-Encoding: identity\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
    with auth.using(auth.ServerAuth((("Authorization", "Bearer k-1234"), ("X-Gateway", "g")))):
        keyed = HttpPool("http://127.0.0.1:8000")  # the credentials of the moment, in every request
    assert b"identity\r\nAuthorization: Bearer k-1234\r\nX-Gateway: g\r\nContent-Length: 7\r\n" in keyed.encode_post(
        "/v1/completions", b'{"a":1}')
    assert b"Host: [::1]:8000\r\n" in HttpPool("http://[::1]:8000").encode_post("/", b"")
    with pytest.raises(ValueError, match="only http"):
        HttpPool("ftp://127.0.0.1/")


async def test_warm_opens_connections_that_requests_then_reuse():
    async def respond(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server, url, connections = await serve(respond)
    async with server, HttpPool(url, timeout_s=5) as pool:
        assert await pool.warm(100, batch=32) == 100
        await asyncio.gather(*(pool.request(pool.encode_post("/x", b"{}"), Collect()) for _ in range(100)))
        assert len(connections) == 100
    async with HttpPool("http://127.0.0.1:9", timeout_s=1) as pool:
        assert await pool.warm(10) == 0  # nothing listens on port 9: no error, nothing warmed
