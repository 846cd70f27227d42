"""The plain-http connection that owns its socket (servesweep.loadgen.http._SocketConnection):
requests larger than the socket takes at once, servers that close idle connections, and a pool
closed under a request."""

import asyncio

import pytest

from servesweep.loadgen import http
from servesweep.loadgen.http import HttpPool, ServerDisconnected


class Collect:
    def __init__(self):
        self.status = None
        self.body = b""
        self.completed = None

    def on_sent(self, now):
        pass

    def on_status(self, status, reason):
        self.status = status

    def on_body(self, data, now):
        self.body += data

    def on_complete(self, now):
        self.completed = now


async def start(handle):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


async def test_a_request_larger_than_the_socket_takes_is_written_in_parts(monkeypatch):
    parts = []
    on_writable = http._SocketConnection._on_writable

    def counted(self):
        parts.append(len(self._pending))
        on_writable(self)

    monkeypatch.setattr(http._SocketConnection, "_on_writable", counted)

    async def handle(reader, writer):
        await asyncio.sleep(0.05)  # let the client's socket fill up first
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(len(body))), len(body)))
        await writer.drain()
        writer.close()

    server, url = await start(handle)
    payload = b"x" * (32 << 20)
    async with server, HttpPool(url, timeout_s=10) as pool:
        got = Collect()
        await pool.request(pool.encode_post("/x", payload), got)
        assert (got.status, got.body) == (200, str(len(payload)).encode())
    assert parts  # the rest went out as the socket drained


async def test_an_idle_connection_the_server_closed_is_not_reused():
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.close()  # keep-alive promised, then the idle connection is closed anyway

    server, url = await start(handle)
    async with server, HttpPool(url, timeout_s=5) as pool:
        for _ in range(2):
            got = Collect()
            await pool.request(pool.encode_post("/x", b"{}"), got)
            assert got.body == b"ok"
            await asyncio.sleep(0.1)
        assert not pool._all  # the closed connections were dropped
    assert len(connections) == 2


async def test_closing_the_pool_fails_a_request_in_flight():
    async def handle(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    server, url = await start(handle)
    async with server:
        pool = HttpPool(url, timeout_s=5)
        task = asyncio.create_task(pool.request(pool.encode_post("/x", b"{}"), Collect()))
        await asyncio.sleep(0.05)
        await pool.close()
        with pytest.raises(ServerDisconnected, match="closed by the client"):
            await asyncio.wait_for(task, 1)
