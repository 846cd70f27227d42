"""Arrival and send times that stay true when the client's event loop is late: the kernel's receive
stamps, the present-clock fallback, and the send time read before the write.

The stand-in server is a plain socket server in a thread, so its timing does not depend on the
client's event loop; the client's loop is blocked with time.sleep right after it sends, the way a
descheduled client would be. Every time is time.perf_counter(), one clock for both threads.
"""

import asyncio
import socket
import sys
import threading
import time

import pytest

from servesweep.loadgen import http
from servesweep.loadgen.http import CLOCK_KERNEL, CLOCK_PRESENT, HttpPool

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


class Collect:
    def __init__(self, block_after_send_s: float = 0.0):
        self.block = block_after_send_s
        self.sent = None
        self.reads: list[tuple[bytes, float]] = []
        self.completed = None

    def on_sent(self, now):
        self.sent = now
        time.sleep(self.block)  # the request is written: the loop now stalls, as if descheduled
        self.woke = time.perf_counter()

    def on_status(self, status, reason):
        self.status = status

    def on_body(self, data, now):
        self.reads.append((data, now))

    def on_complete(self, now):
        self.completed = now

    def first(self, piece: bytes) -> float:
        return next(t for d, t in self.reads if piece in d)


class ScriptedServer:
    """Answers one request with chunk A after `a_after_s`, then chunk B and the end `b_after_s`
    after A. Notes the perf_counter time it had the request, and the times just before and just
    after each write: the kernel stamps the bytes between the two."""

    def __init__(self, a_after_s: float, b_after_s: float):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.a_after_s, self.b_after_s = a_after_s, b_after_s
        self.got_request = None
        self.wrote_a = self.wrote_b = (None, None)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n{}" not in data:
                data += conn.recv(4096)
            self.got_request = time.perf_counter()
            time.sleep(self.a_after_s)
            before = time.perf_counter()
            conn.sendall(HEAD + b"1\r\nA\r\n")
            self.wrote_a = (before, time.perf_counter())
            time.sleep(self.b_after_s)
            before = time.perf_counter()
            conn.sendall(b"1\r\nB\r\n0\r\n\r\n")
            self.wrote_b = (before, time.perf_counter())
            # Close only after the client has: a FIN that arrives while data waits unread lends the
            # data its own (later) stamp.
            conn.settimeout(5)
            conn.recv(1)

    def close(self):
        self.thread.join(5)
        self.listener.close()


def within(t: float, span: tuple[float, float], slack: float = 0.001) -> bool:
    """`t` lies in `span`, give or take the realtime-to-perf_counter offset's error."""
    return span[0] - slack <= t <= span[1] + slack


def exchange(server: ScriptedServer, handler: Collect, use_uvloop: bool = False) -> HttpPool:
    async def main():
        pool = HttpPool(server.url, timeout_s=5)
        async with pool:
            await pool.request(pool.encode_post("/v1/completions", b"{}"), handler)
        return pool

    if use_uvloop:
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            pool = runner.run(main())
    else:
        pool = asyncio.run(main())
    server.close()
    return pool


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_kernel_stamps_keep_each_chunks_arrival_though_the_loop_read_it_late(use_uvloop):
    # A is written 0.1 s after the request and read only when the loop wakes at 0.25 s; B comes
    # 0.25 s after A, when the loop is free. The present clock would put A at 0.25 s (TTFT +150 ms,
    # the gap to B 100 ms too short); the kernel's stamps keep A at 0.1 s and the true gap.
    server = ScriptedServer(a_after_s=0.1, b_after_s=0.25)
    got = Collect(block_after_send_s=0.25)
    pool = exchange(server, got, use_uvloop)
    assert pool.clock_source == CLOCK_KERNEL
    a, b = got.first(b"A"), got.first(b"B")
    assert server.wrote_a[1] < got.woke  # A did wait in the kernel for the loop
    assert within(a, server.wrote_a) and a < got.woke - 0.1
    assert within(b, server.wrote_b)
    assert b - a >= 0.24
    assert got.sent <= server.got_request  # the send time is from before the write
    assert a - got.sent >= 0.09  # TTFT: the server's 0.1 s
    assert got.completed == b


def test_chunks_that_queue_up_unread_share_the_newest_stamp_never_the_late_read():
    # The loop sleeps through both chunks. TCP merges bytes that wait unread into one buffer with
    # the newest receive stamp, so A cannot keep its own time (the documented limit), but both
    # are stamped when B arrived, not when the loop woke 0.2 s later, and e2e stays exact.
    server = ScriptedServer(a_after_s=0.1, b_after_s=0.2)
    got = Collect(block_after_send_s=0.5)
    pool = exchange(server, got)
    assert pool.clock_source == CLOCK_KERNEL
    assert server.wrote_b[1] < got.woke  # both chunks did wait in the kernel
    a, b = got.first(b"A"), got.first(b"B")
    assert server.wrote_a[0] - 0.001 <= a <= b
    assert within(b, server.wrote_b) and b < got.woke
    assert got.completed == b  # e2e: exact, not the wake-up
    assert a - got.sent >= 0.09  # TTFT does not shrink towards 0


@pytest.mark.parametrize("why", ["option refused", "no stamp arrives"])
def test_without_kernel_stamps_the_present_clock_is_used_and_named(monkeypatch, why):
    if why == "option refused":
        monkeypatch.setattr(http, "_enable_kernel_stamps", lambda sock: False)
    else:  # the option seems to be on, yet reads come without a stamp
        monkeypatch.setattr(http, "_enable_kernel_stamps", lambda sock: True)
    server = ScriptedServer(a_after_s=0.1, b_after_s=0.25)
    got = Collect(block_after_send_s=0.25)
    pool = exchange(server, got)
    assert pool.clock_source == CLOCK_PRESENT == "present clock (no SO_TIMESTAMPNS)"
    assert server.wrote_a[1] < got.woke
    assert got.first(b"A") >= got.woke  # stamped when the loop read it, after the stall
    assert got.first(b"B") >= server.wrote_b[0]


def test_clock_source_counts_reads_without_a_stamp():
    pool = HttpPool("http://127.0.0.1:9")
    assert pool.clock_source == CLOCK_KERNEL
    pool._kernel_reads, pool._present_reads = 9, 1
    assert pool.clock_source == "kernel (present clock for 1 of 10 reads)"
    assert HttpPool("https://127.0.0.1:9").clock_source.startswith("present clock (https")


class SlowSocket:
    """A socket whose send stalls 0.2 s after handing the bytes over, like a client descheduled
    right after the write."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        n = self.sock.send(data)
        time.sleep(0.2)
        return n

    def __getattr__(self, name):
        return getattr(self.sock, name)


async def test_send_time_is_read_before_the_write():
    server = ScriptedServer(a_after_s=0.0, b_after_s=0.0)
    async with HttpPool(server.url, timeout_s=5) as pool:
        assert await pool.warm(1) == 1
        conn = pool._idle[0]
        conn._sock = SlowSocket(conn._sock)
        got = Collect()
        await pool.request(pool.encode_post("/x", b"{}"), got)
    await asyncio.to_thread(server.close)
    # Read after the write, the send time would be 0.2 s after the server had the request.
    assert got.sent <= server.got_request
    # A and B are written back to back and may share a stamp; either way, the kernel's.
    assert within(got.first(b"A"), (server.wrote_a[0], server.wrote_b[1]))
    assert pool.clock_source == CLOCK_KERNEL
