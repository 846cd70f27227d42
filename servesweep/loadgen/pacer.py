"""Bounds how much per-request bookkeeping one event-loop iteration runs, so sockets are read
between bursts of it.

Why: a response's chunk is stamped by the kernel when it arrives (servesweep.loadgen.http), so a
read that comes late costs nothing, unless the stream's next chunk arrives first: TCP then merges
the two and the earlier chunk takes the later one's stamp. A read must so come within one
inter-token gap. When many streams have the same timings (a closed loop at fixed lengths; a
server's batch), their requests finish together, and recording each and sending the next one
(~30 us) ran back to back: at 1,000 streams the loop went 15-25 ms without reading a socket,
and the first chunks of the streams just started read 10-30 ms late, as multiples of the 10 ms
gap (bench/results/client_overhead.md).

A `TurnPacer` hands out turns in FIFO order: a turn granted in one loop iteration runs in the
next, after the loop has polled its sockets, and each iteration grants as many as fit in
`budget_s`, learnt from how long the previous batch took. Nothing timed waits for a turn: a
completed request's times are stamped before it asks for one, and the next request's send time
is read when it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

_clock = time.perf_counter
DEFAULT_BUDGET_S = 0.001
MAX_BATCH = 256


class TurnPacer:
    """FIFO turns of deferrable work, about `budget_s` of them per event-loop iteration."""

    __slots__ = ("budget_s", "_waiting", "_batch", "_released", "_batch_start", "_scheduled")

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S) -> None:
        self.budget_s = budget_s
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._batch = 8  # turns granted per iteration; adapted to the measured cost of one
        self._released = 0  # turns granted by the last release, still to be measured
        self._batch_start = 0.0
        self._scheduled = False

    def turn(self) -> asyncio.Future[None]:
        """A future that completes when this caller's turn comes (await it)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting.append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._release, loop)
        return fut

    def _mark(self) -> None:
        # Queued just before the granted turns: they run right after it, then the next release.
        self._batch_start = _clock()

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._released:  # the turns granted last time have just run: what did one cost?
            took = _clock() - self._batch_start
            if took > 0:
                self._batch = max(1, min(MAX_BATCH, int(self._batch * self.budget_s / took)))
            self._released = 0
        waiting = self._waiting
        if not waiting:
            self._scheduled = False
            return
        loop.call_soon(self._mark)
        granted = 0
        while waiting and granted < self._batch:
            fut = waiting.popleft()
            if not fut.done():  # a cancelled waiter gives its turn up
                fut.set_result(None)
                granted += 1
        self._released = granted
        loop.call_soon(self._release, loop)  # next iteration, right after the granted turns
