"""Per-request records and their on-disk form (one JSON object per line).

All times are seconds on the client's monotonic clock, relative to the start of the run, so
records of one run can be lined up against each other and against the server telemetry.
"""

from __future__ import annotations

import asyncio

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

# Error kinds, so failed requests can be counted by cause.
ERROR_HTTP = "http_error"
ERROR_CONNECTION = "connection_error"
ERROR_TIMEOUT = "timeout"
ERROR_STREAM = "stream_error"  # the server sent an error event or a malformed stream
ERROR_CANCELLED = "cancelled"  # stopped by Ctrl-C / SIGTERM / end of a duration-bounded run


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
    first_token_s: float | None = None
    end_s: float | None = None
    # Arrival time of every content-bearing chunk, so ITL is every gap rather than an average.
    chunk_arrivals_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    http_status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    output_text: str | None = None

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
        data["e2e_ms"] = self.e2e_ms
        data["tpot_ms"] = self.tpot_ms
        data["itl_ms"] = self.itl_ms
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class RecordWriter:
    """Appends each record to a JSONL file the moment it completes. Inside an event loop the file is
    flushed once the loop gets control back, so the thousand records of a wave of requests that
    finish together cost one system call, not a thousand, while streams are being timed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "ab")
        self._flush_pending = False

    def write(self, record: RequestRecord) -> None:
        self._file.write(orjson.dumps(record.to_dict()) + b"\n")
        if self._flush_pending:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush)
            self._flush_pending = True
        except RuntimeError:  # no event loop: flush now
            self._file.flush()

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
