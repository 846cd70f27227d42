"""A stand-in OpenAI streaming server for benchmarking load generators, as fast as one core allows.

Raw non-blocking sockets on uvloop (no web framework): it parses just enough HTTP/1.1 to serve
POST /v1/completions and /v1/chat/completions (streaming or not), GET /v1/models and
GET /stats, with keep-alive. A request gets `max_tokens` chunks of one token each, the first
after --ttft-ms and the rest --itl-ms apart, scheduled from the moment the request reached the
kernel (its SO_TIMESTAMPNS receive time, so the true timings are known even while this process is
busy), then a usage chunk when `stream_options.include_usage` asks, then [DONE].

With zero delays the server writes as fast as the client reads (it stops a stream while the
socket's send buffer is full), so chunks per second measured here are the client's rate.
GET /stats reports counters and how late the server itself was against its own schedule: that
lateness is part of any client's measured error, and the benchmark prints it alongside.

    taskset -c 0 python bench/fast_server.py --port 8100 --ttft-ms 50 --itl-ms 10

Several cores: start N processes with --reuse-port on the same --port (the kernel spreads new
connections over them with SO_REUSEPORT) and a distinct --admin-port each, where its own GET /stats
can be read (a /stats on the shared port reaches whichever process the kernel picks).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
from collections import deque
import json
import socket
import struct
import time

import orjson

clock = time.perf_counter
MAX_LATENESS_SAMPLES = 200_000
BURST = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; older Pythons lack the name
ANCILLARY_BYTES = socket.CMSG_SPACE(16)
HIGH_WATER = 64 * 1024  # bytes queued on a connection before its streams wait


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.chunks = 0
        self.first_request_s: float | None = None
        self.last_request_s: float | None = None
        self.first_chunk_lateness_ms: list[float] = []
        self.chunk_lateness_ms: list[float] = []
        self.intake_ms: list[float] = []  # kernel receive -> request parsed, per request
        # With --stamps: per streamed response, [arrival, write time of each chunk...] (perf_counter
        # seconds, CLOCK_MONOTONIC: the client's clock too), so a client's error can be split into
        # the server's part and the client's.
        self.stamps: list[list[float]] = []
        self.pump_busy_s = 0.0  # time the pump spent writing due chunks (not waiting for the next)

    def as_dict(self) -> dict:
        def pct(values: list[float]) -> dict:
            if not values:
                return {}
            s = sorted(values)
            return {"p50": s[len(s) // 2], "p99": s[min(len(s) - 1, int(len(s) * 0.99))], "max": s[-1],
                    "n": len(s)}

        return {"requests": self.requests, "chunks": self.chunks, "now_s": clock(),
                "first_request_s": self.first_request_s, "last_request_s": self.last_request_s,
                "first_chunk_lateness_ms": pct(self.first_chunk_lateness_ms),
                "chunk_lateness_ms": pct(self.chunk_lateness_ms), "intake_ms": pct(self.intake_ms),
                "pump_busy_s": self.pump_busy_s}


STATS = Stats()


class Config:
    ttft_s = 0.0
    itl_s = 0.0
    model = "stand-in"
    stamps = False
    timed = False  # ttft_s or itl_s: chunks leave on a schedule


def _sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Stream:
    """One streamed response, written chunk by chunk on the event loop."""

    __slots__ = ("proto", "n", "sent", "start", "chat", "usage", "prompt_tokens", "template", "writes", "due")

    def __init__(self, proto: "HttpConnection", n: int, chat: bool, usage: bool, prompt_tokens: int,
                 start: float) -> None:
        self.proto, self.n, self.sent, self.chat, self.usage = proto, n, 0, chat, usage
        self.prompt_tokens = prompt_tokens
        self.start = start  # when the request reached this machine's kernel
        self.due = start + Config.ttft_s  # when the next chunk is to leave
        obj = ({"id": "x", "object": "chat.completion.chunk", "model": Config.model,
                "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]} if chat else
               {"id": "x", "object": "text_completion", "model": Config.model,
                "choices": [{"index": 0, "text": "tok", "finish_reason": None}]})
        self.template = _chunked(_sse(obj))
        self.writes: list[float] | None = None
        if Config.stamps and len(STATS.stamps) < MAX_LATENESS_SAMPLES:
            self.writes = [start]
            STATS.stamps.append(self.writes)

    def step(self) -> None:
        """Write the next chunk (or the end) and schedule the one after."""
        proto = self.proto
        if proto.closed:
            return
        if proto.paused:
            proto.blocked.append(self)
            return
        if Config.timed:
            # The timed path runs once per chunk per stream (100k times a second at 1,000 streams
            # and 10 ms apart): it does no more than record its lateness, write and requeue.
            now = clock()
            target = STATS.chunk_lateness_ms if self.sent else STATS.first_chunk_lateness_ms
            if len(target) < MAX_LATENESS_SAMPLES:
                target.append((now - self.due) * 1000)
            if self.sent < self.n - 1:
                proto.write(self.template)
                if self.writes is not None:
                    self.writes.append(clock())
                self.sent += 1
                STATS.chunks += 1
                self.due += Config.itl_s
                PUMP.add(self)
                return
        elif self.sent < self.n - 1:
            # Without injected delays, a few chunks per write keep the server's core well ahead of any
            # client; the client still parses every event on its own.
            burst = min(BURST, self.n - 1 - self.sent)
            proto.write(self.template * burst)
            self.sent += burst
            STATS.chunks += burst
            asyncio.get_running_loop().call_soon(self.step)
            return
        # The last token carries finish_reason; then usage (when asked) and [DONE].
        choice = {"index": 0, "finish_reason": "length"}
        choice.update({"delta": {"content": "tok"}} if self.chat else {"text": "tok"})
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n,
                 "total_tokens": self.prompt_tokens + self.n}
        last = {"id": "x", "object": "chat.completion.chunk" if self.chat else "text_completion",
                "model": Config.model, "choices": [choice]}
        tail = [_chunked(_sse(last))]
        if self.usage:
            tail.append(_chunked(_sse({"id": "x", "object": last["object"], "model": Config.model, "choices": [],
                                        "usage": usage})))
        tail.append(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        proto.write(b"".join(tail))
        if self.writes is not None:
            self.writes.append(clock())
        STATS.chunks += 1
        proto.finish_response()

    def schedule(self) -> None:
        if Config.timed:
            PUMP.add(self)
        else:
            asyncio.get_running_loop().call_soon(self.step)


class Pump:
    """Writes due chunks on time. Event-loop timers wake up to a millisecond late (epoll waits in
    whole milliseconds), which would add the server's own error to every client's: instead the
    pump keeps the due chunks in order and, once the next one is less than 2 ms away, spins
    through the event loop (`sleep(0)` still serves sockets) until it is due. The server has a
    core to itself, so spinning costs nothing the client could use.

    Two queues, because a heap costs microseconds per chunk in Python and this core has ~10 us
    per chunk at 1,000 streams 10 ms apart: a stream whose chunk was just written is next due
    one gap later, and chunks are written in due order, so those requeue in order at the end of
    a FIFO. A first chunk (due when its request arrived plus TTFT: arrivals are not in order
    across connections) or a stream resumed after its connection's send buffer drained goes to
    the heap when it would not keep the FIFO in order."""

    def __init__(self) -> None:
        self.fifo: deque[Stream] = deque()
        self.heap: list[tuple[float, int, Stream]] = []
        self.seq = 0
        self.wakeup: asyncio.Event | None = None
        self.sleeping = False

    def add(self, stream: Stream) -> None:
        fifo = self.fifo
        if not fifo or fifo[-1].due <= stream.due:
            fifo.append(stream)
        else:
            self.seq += 1
            heapq.heappush(self.heap, (stream.due, self.seq, stream))
        if self.sleeping:
            self.sleeping = False
            self.wakeup.set()  # type: ignore[union-attr]

    def next_due(self) -> float | None:
        fifo, heap = self.fifo, self.heap
        if fifo:
            return min(fifo[0].due, heap[0][0]) if heap else fifo[0].due
        return heap[0][0] if heap else None

    async def run(self) -> None:
        self.wakeup = asyncio.Event()
        fifo, heap = self.fifo, self.heap
        pop, heappop = fifo.popleft, heapq.heappop
        while True:
            now = clock()
            wrote = False
            while True:  # every chunk due by `now`, earliest first
                if fifo and (not heap or fifo[0].due <= heap[0][0]):
                    if fifo[0].due > now:
                        break
                    pop().step()
                elif heap and heap[0][0] <= now:
                    heappop(heap)[2].step()
                else:
                    break
                wrote = True
            if wrote:
                STATS.pump_busy_s += clock() - now
            due = self.next_due()
            if due is None:
                self.wakeup.clear()
                self.sleeping = True
                await self.wakeup.wait()
                continue
            wait = due - clock()
            if wait > 0.002:
                self.wakeup.clear()
                self.sleeping = True
                try:
                    await asyncio.wait_for(self.wakeup.wait(), wait - 0.0015)
                except asyncio.TimeoutError:
                    pass
                self.sleeping = False
            else:
                await asyncio.sleep(0)


PUMP = Pump()


class HttpConnection:
    """One client connection on a raw non-blocking socket. The socket is read with recvmsg and
    SO_TIMESTAMPNS: the kernel's receive time of a request anchors its schedule, so time the
    request spent waiting for this process (1,000 requests landing at once keep one core busy
    for milliseconds) counts as the server being late, not as the client's error."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.buffer = b""
        self.out = bytearray()
        self.paused = False
        self.closed = False
        self.busy = False
        self.blocked: list[Stream] = []
        self.arrival = 0.0  # perf_counter time at which the kernel received the latest bytes
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        now = clock()
        self.arrival = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                # CLOCK_REALTIME from the kernel, moved onto perf_counter's clock.
                self.arrival = now - (time.time() - (sec + nsec * 1e-9))
        self.buffer += data
        self._next_request()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.loop.add_writer(self.fd, self._writable)
        self.out += data
        if len(self.out) > HIGH_WATER:
            self.paused = True

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.fd)
        if self.paused and len(self.out) <= HIGH_WATER // 4:
            self.paused = False
            blocked, self.blocked = self.blocked, []
            for stream in blocked:
                stream.step()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self.out:
            self.loop.remove_writer(self.fd)
        self.sock.close()

    def _next_request(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4:end + 4 + length]
        self.buffer = self.buffer[end + 4 + length:]
        self.busy = True
        self._handle(method, path.split("?", 1)[0], body)

    def _json(self, status: str, obj: dict) -> None:
        payload = orjson.dumps(obj)
        self.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (status.encode(), len(payload), payload))
        self.finish_response()

    def finish_response(self) -> None:
        self.busy = False
        if self.buffer:
            self._next_request()

    def _handle(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path == "/v1/models":
            return self._json("200 OK", {"object": "list", "data": [{"id": Config.model, "object": "model",
                                                                        "owned_by": "bench", "max_model_len": 1 << 20}]})
        if method == "GET" and path in ("/health", "/"):
            return self._json("200 OK", {})
        if method == "GET" and path == "/stats":
            return self._json("200 OK", STATS.as_dict())
        if method == "GET" and path == "/stamps":
            return self._json("200 OK", {"stamps": STATS.stamps})
        if method == "POST" and path == "/stats/reset":
            STATS.reset()
            return self._json("200 OK", {})
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return self._json("404 Not Found", {"error": {"message": f"no route {method} {path}"}})
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._json("400 Bad Request", {"error": {"message": "body is not JSON"}})
        arrived = self.arrival
        STATS.requests += 1
        STATS.first_request_s = STATS.first_request_s or arrived
        STATS.last_request_s = arrived
        if len(STATS.intake_ms) < MAX_LATENESS_SAMPLES:
            STATS.intake_ms.append((clock() - arrived) * 1000)
        chat = path.endswith("chat/completions")
        n = max(1, int(req.get("max_tokens") or req.get("max_completion_tokens") or 16))
        prompt = req.get("prompt") if not chat else " ".join(str(m.get("content", "")) for m in req.get("messages", []))
        prompt_tokens = max(1, len(str(prompt or "").split()))
        if not req.get("stream"):
            STATS.chunks += n
            text = "tok" * n
            choice = {"index": 0, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return self._json("200 OK", {"id": "x", "object": "chat.completion" if chat else "text_completion",
                                         "model": Config.model, "choices": [choice],
                                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                   "total_tokens": prompt_tokens + n}})
        self.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                   b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        Stream(self, n, chat, usage, prompt_tokens, arrived).schedule()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--model", default="stand-in")
    parser.add_argument("--stamps", action="store_true",
                        help="keep each stream's arrival and chunk write times, served at GET /stamps")
    parser.add_argument("--reuse-port", action="store_true",
                        help="SO_REUSEPORT: several processes share --port (the kernel balances connections)")
    parser.add_argument("--admin-port", type=int, default=None,
                        help="also serve on this port, this process only (to read its own /stats)")
    args = parser.parse_args()
    Config.ttft_s, Config.itl_s, Config.model = args.ttft_ms / 1000, args.itl_ms / 1000, args.model
    Config.stamps = args.stamps
    Config.timed = bool(Config.ttft_s or Config.itl_s)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        asyncio.create_task(PUMP.run())
        listeners = [socket.create_server((args.host, args.port), backlog=4096, reuse_port=args.reuse_port)]
        if args.admin_port is not None:
            listeners.append(socket.create_server((args.host, args.admin_port), backlog=64))

        def accept(listener: socket.socket) -> None:
            while True:
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # out of file descriptors and the like: try again on the next event
                    return
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                HttpConnection(loop, sock)

        for listener in listeners:
            listener.setblocking(False)
            loop.add_reader(listener.fileno(), accept, listener)
        print(json.dumps({"listening": f"http://{args.host}:{args.port}", "ttft_ms": args.ttft_ms,
                          "itl_ms": args.itl_ms, "reuse_port": args.reuse_port, "admin_port": args.admin_port}),
              flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
