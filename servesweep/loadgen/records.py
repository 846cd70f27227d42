"""Per-request records and their on-disk form (one JSON object per line).

All times are seconds on the client's monotonic clock, relative to the start of the run, so
records of one run can be lined up against each other and against the server telemetry.

On disk (version 2, `"v": 2` on every line), a record is its fields that are not None (times to
the microsecond) plus the derived `ttft_ms`, `first_text_ms`, `e2e_ms` and `tpot_ms` (to the
microsecond), with the
chunk arrival times as integer microseconds in `chunk_us`: the
first one since the run's start, each next one as the gap from the one before (an ITL gap is
`chunk_us[i] / 1000` ms). That is ~5 bytes a chunk instead of the ~40 that a float time plus a float
ITL took in version 1 (which had `chunk_arrivals_s` and `itl_ms`; `read_records` reads both).
How much is kept (`--records`): "full" (with chunk times), "requests" (without them: no `chunk_us`,
the chunk count stays in `chunks`) or "none" (no records file). Statistics never come from the
file: they are computed as the run goes (servesweep.loadgen.stats.RunStats).
"""

from __future__ import annotations

import asyncio
import queue
import threading

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np
import orjson

from servesweep.errors import OutputError

# Error kinds, so failed requests can be counted by cause.
RECORDS_FILE = "records.jsonl"  # a load test's records, in its output directory
ERROR_HTTP = "http_error"
ERROR_CONNECTION = "connection_error"
ERROR_TIMEOUT = "timeout"
ERROR_STREAM = "stream_error"  # the server sent an error event or a malformed stream
ERROR_CANCELLED = "cancelled"  # stopped by Ctrl-C / SIGTERM / end of a duration-bounded run
# The response ended well-formed but cut short: fewer tokens than asked while EOS was ignored, or an
# unexpected finish_reason (servesweep.loadgen.exchange). Not a success: it did not do the work asked.
ERROR_TRUNCATED = "truncated"

# Where a record's `completion_tokens` came from: the server's `usage`, or, for a stream that
# reported none, the number of content-bearing chunks (one token per chunk: an undercount when a
# server puts several tokens in one chunk). None: no count at all (a non-streamed answer without usage).
TOKENS_FROM_USAGE = "usage"
TOKENS_FROM_CHUNKS = "chunks"

# Which rule found the token-bearing chunks of a stream (servesweep.loadgen.exchange): the server's
# per-chunk usage, or the per-endpoint chunk rule.
TIMING_USAGE_PER_CHUNK = "usage_per_chunk"
TIMING_CHUNKS = "chunks"

RECORDS_VERSION = 2
RECORDS_FULL, RECORDS_REQUESTS, RECORDS_NONE = "full", "requests", "none"
RECORDS_KEEP = (RECORDS_FULL, RECORDS_REQUESTS, RECORDS_NONE)
MAX_PENDING_BYTES = 64 * 2**20  # RecordWriter(background=True): lines waiting for the writer thread


@dataclass(slots=True)
class RequestRecord:
    request_id: int
    level: str
    warmup: bool
    scheduled_s: float
    prompt_len_requested: int | None = None
    output_len_requested: int | None = None
    sent_s: float | None = None
    # When the request's bytes were handed to the socket. Latencies count from here: time the
    # client spent before that (connecting, or its event loop busy with other streams) is not
    # the server's, and is reported on its own as `client_send_delay_ms`.
    wire_s: float | None = None
    first_token_s: float | None = None  # the first generated token, with or without text
    first_text_s: float | None = None  # the first chunk with visible text
    end_s: float | None = None
    # Arrival time of every content-bearing chunk, so ITL is every gap rather than an average.
    chunk_arrivals_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    completion_tokens_source: str | None = None  # TOKENS_FROM_USAGE | TOKENS_FROM_CHUNKS | None
    token_timing: str | None = None  # TIMING_USAGE_PER_CHUNK | TIMING_CHUNKS; None: not streamed
    tokens_without_text: int = 0  # generated tokens whose chunk carried no visible text
    finish_reason: str | None = None  # the server's, where the last choice carried one
    http_status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    output_text: str | None = None
    # Multi-turn sessions (servesweep.loadgen.sessions): which conversation and turn this was.
    session_id: int | None = None
    turn: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.end_s is not None

    @property
    def start_s(self) -> float | None:
        return self.wire_s if self.wire_s is not None else self.sent_s

    @property
    def ttft_ms(self) -> float | None:
        start = self.start_s
        if self.first_token_s is None or start is None:
            return None
        return (self.first_token_s - start) * 1000.0

    @property
    def first_text_ms(self) -> float | None:
        """Time to the first visible text: TTFT's old meaning, which lies far behind the first
        token when tokens decode to nothing (see servesweep.loadgen.exchange)."""
        start = self.start_s
        if self.first_text_s is None or start is None:
            return None
        return (self.first_text_s - start) * 1000.0

    @property
    def e2e_ms(self) -> float | None:
        start = self.start_s
        if self.end_s is None or start is None:
            return None
        return (self.end_s - start) * 1000.0

    @property
    def client_send_delay_ms(self) -> float | None:
        if self.wire_s is None or self.sent_s is None:
            return None
        return (self.wire_s - self.sent_s) * 1000.0

    @property
    def itl_ms(self) -> list[float]:
        arrivals = self.chunk_arrivals_s
        return [(b - a) * 1000.0 for a, b in zip(arrivals, arrivals[1:])]

    @property
    def tpot_ms(self) -> float | None:
        """(e2e - ttft) / (output_tokens - 1): the mean decode time per token after the first."""
        ttft, e2e, n = self.ttft_ms, self.e2e_ms, self.completion_tokens
        if ttft is None or e2e is None or not n or n < 2:
            return None
        return (e2e - ttft) / (n - 1)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["ttft_ms"] = self.ttft_ms
        data["first_text_ms"] = self.first_text_ms
        data["e2e_ms"] = self.e2e_ms
        data["tpot_ms"] = self.tpot_ms
        data["itl_ms"] = self.itl_ms
        return data

    def encode(self, keep: str = RECORDS_FULL) -> bytes:
        """One line of records.jsonl (version 2, see the module docstring), newline included."""
        # Fields that are None are left out (reading fills in the default): a third of a record's bytes.
        # Times are written to the microsecond (the clock's useful resolution here), which also
        # halves their digits.
        data: dict[str, Any] = {"v": RECORDS_VERSION}
        for name in _NAMES_IN_ORDER:
            value = getattr(self, name)
            if value is not None:
                data[name] = round(value, 6) if name in _TIMES_S else value
        arrivals = data.pop("chunk_arrivals_s")
        for name in _DERIVED_MS:
            value = getattr(self, name)
            if value is not None:
                data[name] = round(value, 3)
        data["chunks"] = len(arrivals)
        if keep == RECORDS_FULL:
            # Rounded on the cumulative time, so gaps do not add up rounding errors; in numpy, since
            # a Python loop here cost as much per chunk as reading the chunk (np.rint rounds half to
            # even, as round() does, so the digits are the same).
            micros = np.rint(np.array(arrivals, dtype=np.float64) * 1e6).astype(np.int64)
            gaps = micros.copy()  # not np.diff(prepend=0): its broadcast cost more than the loop did
            gaps[1:] -= micros[:-1]
            data["chunk_us"] = gaps
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestRecord":
        record = cls(**{k: v for k, v in data.items() if k in _NAMES})
        us = data.get("chunk_us")
        if us:  # version 2: microsecond gaps back to seconds since the run's start
            arrivals, total = [], 0
            for gap in us:
                total += gap
                arrivals.append(total / 1e6)
            record.chunk_arrivals_s = arrivals
        return record


_FIELDS = fields(RequestRecord)
_NAMES_IN_ORDER = tuple(f.name for f in _FIELDS)
_NAMES = frozenset(_NAMES_IN_ORDER)
_TIMES_S = frozenset(("scheduled_s", "sent_s", "wire_s", "first_token_s", "first_text_s", "end_s"))
_DERIVED_MS = ("ttft_ms", "first_text_ms", "e2e_ms", "tpot_ms")


class RecordWriter:
    """Appends each record to a JSONL file the moment it completes. Inside an event loop the file is
    flushed once the loop gets control back, so the thousand records of a wave of requests that
    finish together cost one system call, not a thousand, while streams are being timed.

    A failed write or flush (disk full, file system gone read-only) is not raised into the request
    that completed, nor logged as a stray event-loop callback error: the first one is kept in
    `error`, `on_error` hears of it (the runner stops the run: records it cannot keep are not worth
    measuring), and later records are dropped, since a file that took a torn line cannot take more.
    Used as a context manager, the writer raises OutputError on exit when a write failed.

    `keep` (RECORDS_KEEP) says how much of each record is written; with "none" no file is made.
    `bytes_written` counts what went to the file, for the disk-space projection.

    `background=True` (the timed load generator): the event loop only encodes each record and, once
    per loop turn, hands the turn's lines to a writer thread, which writes and flushes them. A
    write() that blocks (the kernel throttling a process while it writes back other dirty pages,
    a slow or network disk) then stalls that thread, not the loop that must read every socket
    within one inter-token gap (servesweep.loadgen.pacer). Errors reach `on_error` through the
    loop (call_soon_threadsafe); `close()` writes what is queued and joins the thread.

    The lines handed over and not yet written are bounded (`max_pending_bytes`): a disk that stalls
    for longer than that takes (64 MiB: ~80,000 records, over a minute at 1,000 requests/s) does
    not grow the client's memory with the stall. A turn's lines that would pass the bound are
    dropped, not waited for (waiting would hold the loop and spoil every stream's timing), and
    counted in `dropped`; the run's statistics do not come from the file and stay whole, and the
    summary names the count (servesweep.loadtest).
    """

    def __init__(self, path: Path, on_error: Callable[[OSError], None] | None = None,
                 keep: str = RECORDS_FULL, background: bool = False,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        if keep not in RECORDS_KEEP:
            raise ValueError(f"records: {keep!r} is not one of {', '.join(RECORDS_KEEP)}")
        self.path = path
        self.on_error = on_error
        self.keep = keep
        self.error: OSError | None = None
        self.bytes_written = 0
        self.count = 0
        self.dropped = 0  # records left out because the writer thread was too far behind
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0  # handed over, not yet written: the loop adds, the thread subtracts
        self._pending_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = self._open(path) if keep != RECORDS_NONE else None
        self._flush_pending = False
        self._lines: list[bytes] = []  # background: this loop turn's lines, not yet handed over
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if background and self._file is not None:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._drain, name="servesweep-records", daemon=True)
            self._thread.start()

    def _open(self, path: Path) -> IO[bytes]:
        return open(path, "ab")

    def write(self, record: RequestRecord) -> None:
        self.count += 1
        if self.error is not None or self._file is None:
            return
        line = record.encode(self.keep)
        self.bytes_written += len(line)
        if self._queue is not None:
            self._lines.append(line)
            if not self._flush_pending:
                try:
                    self._loop = asyncio.get_running_loop()
                    self._loop.call_soon(self._hand_over)
                    self._flush_pending = True
                except RuntimeError:  # no event loop: hand over now
                    self._hand_over()
            return
        try:
            self._file.write(line)
        except OSError as exc:
            self._failed(exc)
            return
        if self._flush_pending:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush)
            self._flush_pending = True
        except RuntimeError:  # no event loop: flush now
            self._flush()

    def _flush(self) -> None:
        self._flush_pending = False
        if self.error is None and self._file is not None and not self._file.closed:
            try:
                self._file.flush()
            except OSError as exc:
                self._failed(exc)

    def _hand_over(self) -> None:
        self._flush_pending = False
        if not self._lines or self._queue is None:
            return
        data = b"".join(self._lines)
        with self._pending_lock:
            fits = self._pending_bytes + len(data) <= self.max_pending_bytes
            if fits:
                self._pending_bytes += len(data)
        if fits:
            self._queue.put(data)
        else:
            self.dropped += len(self._lines)
            self.bytes_written -= len(data)
        self._lines = []

    def _drain(self) -> None:  # the writer thread
        assert self._queue is not None and self._file is not None
        while (data := self._queue.get()) is not None:
            if self.error is None:  # a file that took a torn line cannot take more
                self._write_from_thread(data)
            with self._pending_lock:  # after the write: a blocked write() still counts against the bound
                self._pending_bytes -= len(data)

    def _write_from_thread(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self.error = exc
            loop = self._loop
            if self.on_error is not None and loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self.on_error, exc)
                except RuntimeError:  # the loop closed meanwhile: close() reports it
                    pass

    def _failed(self, exc: OSError) -> None:
        if self.error is not None:
            return
        self.error = exc
        if self.on_error is not None:
            self.on_error(exc)

    def describe_error(self) -> str | None:
        """One line naming the file and the cause, or None when every write succeeded."""
        if self.error is None:
            return None
        return f"cannot write records to {self.path}: {self.error.strerror or self.error}"

    def close(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._hand_over()
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()  # flushes what is buffered: may meet the full disk too
            except OSError as exc:
                self._failed(exc)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close()
        if exc_type is None and self.error is not None:
            raise OutputError(self.describe_error())


def describe_dropped(count: int) -> str:
    """The summary's line for records a writer left out (RecordWriter.dropped, summed over workers)."""
    return (f"{count} records were left out of the records file: the disk took them slower than they "
            f"completed ({MAX_PENDING_BYTES // 2**20} MiB waiting); the statistics include them")


def read_records(path: Path) -> Iterator[RequestRecord]:
    """Read records back; a torn last line (the process died mid-write) is skipped."""
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield RequestRecord.from_dict(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
