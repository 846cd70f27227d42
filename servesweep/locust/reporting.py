"""How a servesweep request record appears in Locust's statistics.

Entries (Locust keys entries by name and type):
  - the request itself, under its endpoint path ("POST /v1/completions"): response time = e2e
    (servesweep's definition: from the moment the request's bytes were handed to the socket to
    the last byte), response length = output tokens (usage.completion_tokens), and on failure the
    server's own message, which Locust groups in its Failures tab;
  - type "LLM", names "TTFT", "TPOT" and "ITL": one sample per successful request (TTFT, TPOT) and one
    per gap between streamed chunks (ITL), with the same definitions as `servesweep run`
    (servesweep.loadgen.records.RequestRecord). They are logged on their entries directly, not
    through Locust's request event, so the "Aggregated" row and the requests-per-second chart
    count requests only, not token gaps.

Resolution. Locust stores each response time in a histogram bucket, by default to two significant
digits (147 ms is kept as 150 ms, 3,432 ms as 3,400 ms), and its percentiles are read from those
buckets. `bucket_ms` keeps whole milliseconds up to 10 s, so TTFT, TPOT and ITL percentiles are
exact to the millisecond, and three significant digits above that (at most ~10,000 + 900 keys per
entry, still small enough to ship from workers every few seconds). Averages, minima and maxima are
not bucketed. Sub-millisecond detail is in records.jsonl and summary.json, computed from the raw
times. Percentiles reported: 50, 90 and 99 %.

This module does not import Locust: `configure_stats` is handed the `locust.stats` module.
"""

from __future__ import annotations

import math
import time
from typing import Any

from servesweep.loadgen.records import RequestRecord

METRIC_TYPE = "LLM"
TTFT, TPOT, ITL = "TTFT", "TPOT", "ITL"
PERCENTILES = [0.50, 0.90, 0.99]
WHOLE_MS_BELOW = 10_000.0


def bucket_ms(response_time: float) -> int:
    """Locust's histogram key for a time in ms: whole ms below 10 s, 3 significant digits above."""
    if response_time < WHOLE_MS_BELOW:
        return int(round(response_time))
    digits = int(math.floor(math.log10(response_time))) - 2
    return int(round(response_time, -digits))


def configure_stats(stats_module: Any) -> None:
    """Millisecond buckets and 50/90/99 percentiles in Locust's console, CSV, charts and UI."""
    stats_module.bucket_response_time = bucket_ms
    stats_module.PERCENTILES_TO_REPORT = list(PERCENTILES)
    stats_module.PERCENTILES_TO_STATISTICS = list(PERCENTILES)
    stats_module.PERCENTILES_TO_CHART = list(PERCENTILES)


class LLMRequestError(Exception):
    """A failed request as Locust shows it: the error kind, the HTTP status and the server's message."""


def failure_text(record: RequestRecord) -> str:
    status = f" (HTTP {record.http_status})" if record.http_status not in (None, 200) else ""
    return f"{record.error_kind}{status}: {record.error_message or 'no message'}"


def report_record(environment: Any, record: RequestRecord, name: str, url: str, method: str = "POST") -> None:
    """Log one finished (not cancelled) request on Locust's statistics."""
    ok = record.ok
    e2e = record.e2e_ms
    environment.events.request.fire(
        request_type=method, name=name, response_time=e2e if e2e is not None else 0.0,
        response_length=record.completion_tokens or 0,
        exception=None if ok else LLMRequestError(failure_text(record)),
        context={}, response=None, url=url, start_time=time.time() - (e2e or 0.0) / 1000.0,
    )
    if not ok:
        return
    stats = environment.stats
    ttft = record.ttft_ms
    if ttft is not None:
        stats.get(TTFT, METRIC_TYPE).log(ttft, 0)
    tpot = record.tpot_ms
    if tpot is not None:
        stats.get(TPOT, METRIC_TYPE).log(tpot, 0)
    arrivals = record.chunk_arrivals_s
    if len(arrivals) > 1:
        log = stats.get(ITL, METRIC_TYPE).log
        previous = arrivals[0]
        for t in arrivals[1:]:
            log((t - previous) * 1000.0, 0)
            previous = t
