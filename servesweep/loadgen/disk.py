"""Will the records fit? A warning before a run whose records.jsonl would outgrow the free disk.

Before the run, the size is estimated where the number of requests is known in advance (levels of
`--num-requests`, open-loop rate x duration, a trace); a closed-loop level bound by `--duration`
has no request count until it runs, so `RecordsSpaceWatch` projects it from the rate the records
files actually grow at, ten seconds in and then every minute, and warns once.

Bytes per record (version 2, measured on 64-token answers: 403 B without chunk times, 741 B with):
~410 B plus ~5.3 B per output token with chunk times ("full"), ~410 B without ("requests").
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import RECORDS_FULL, RECORDS_NONE
from servesweep.loadgen.workload import Workload

RECORD_BASE_BYTES = 410
CHUNK_BYTES = 5.3  # one integer microsecond gap of a few ms and its comma
FIRST_CHECK_S = 10.0
CHECK_EVERY_S = 60.0


def record_bytes(workload: Workload, keep: str) -> float:
    """Estimated bytes of one record on disk."""
    if keep == RECORDS_NONE:
        return 0.0
    mean_out = float(workload.output_len.sample(np.random.default_rng(0), 256).mean())
    return RECORD_BASE_BYTES + (CHUNK_BYTES * mean_out if keep == RECORDS_FULL else 0.0)


def planned_requests(levels: list[LoadLevel], trace_len: int | None) -> int | None:
    """Requests the levels will send, where that is known before the run; else None."""
    total = 0
    for lv in levels:
        if lv.arrival == "trace" and trace_len is not None:
            total += trace_len
        elif lv.num_requests is not None:
            total += lv.num_requests + lv.warmup_requests
        elif lv.request_rate is not None and lv.duration_s is not None and lv.arrival != "sessions":
            total += int(lv.request_rate * lv.duration_s) + lv.warmup_requests
        else:
            return None
    return total


def _warn(message: str) -> None:
    print(f"servesweep: warning: {message}", file=sys.stderr, flush=True)


def check_records_space(out: Path, levels: list[LoadLevel], workload: Workload, keep: str,
                        trace_len: int | None) -> int | None:
    """Warn when the estimated records exceed the free space under `out`; returns the estimate."""
    n = planned_requests(levels, trace_len)
    if n is None or keep == RECORDS_NONE:
        return None
    estimate = int(n * record_bytes(workload, keep))
    free = shutil.disk_usage(out).free
    if estimate > free:
        _warn(f"the records of this run would take ~{estimate / 1e9:.1f} GB ({n} requests x "
              f"{record_bytes(workload, keep):.0f} B, --records {keep}) but {out} has {free / 1e9:.1f} GB free; "
              "--records requests (no chunk times) or none keeps less")
    return estimate


class RecordsSpaceWatch:
    """During a run of duration-bound levels: projects the records files' growth to the run's end."""

    def __init__(self, out: Path, levels: list[LoadLevel], keep: str) -> None:
        self.out = out
        self.keep = keep
        durations = [lv.duration_s for lv in levels]
        self.planned_s = sum(durations) if all(d is not None for d in durations) else None  # type: ignore[arg-type]
        self.warned = False

    def _size(self) -> int:
        return sum(p.stat().st_size for pattern in ("records.jsonl", "records.worker-*.jsonl")
                   for p in self.out.glob(pattern) if p.exists())

    def check(self, elapsed_s: float) -> bool:
        """Warn (once) when the projected size exceeds the free space; True when it warned now."""
        if self.warned or self.planned_s is None or elapsed_s <= 0 or self.keep == RECORDS_NONE:
            return False
        size = self._size()
        projected = size / elapsed_s * self.planned_s
        free = shutil.disk_usage(self.out).free
        if projected - size > free:
            self.warned = True
            _warn(f"records are growing at {size / elapsed_s / 1e6:.2f} MB/s: by the run's end they would take "
                  f"~{projected / 1e9:.1f} GB but {self.out} has {free / 1e9:.1f} GB free; "
                  "--records requests (no chunk times) or none keeps less")
            return True
        return False

    async def run(self) -> None:
        start = time.monotonic()
        await asyncio.sleep(FIRST_CHECK_S)
        while not self.warned:
            self.check(time.monotonic() - start)
            await asyncio.sleep(CHECK_EVERY_S)
