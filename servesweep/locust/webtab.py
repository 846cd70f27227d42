"""The "LLM" tab of Locust's web UI: tokens/s, TTFT/TPOT/ITL/e2e percentiles, server batch and KV use.

Locust's UI renders extra tabs declared in `template_args["extended_tabs"]`, each a table whose
columns are given in `template_args["extended_tables"]` and whose rows come in the
`extended_stats` field of the `/stats/requests` answer the page polls every two seconds.
`LiveStats` keeps what those rows need, updated record by record on the master (or the single
process): the latency samples of the current test, the recent completions for rates, and the
server telemetry samples. Rows are recomputed per poll from these, not from the records file.

Rows are named "Category: metric", since the UI lists them in alphabetical order (Failures,
Latency, Server, Throughput). Columns: "Now" is a rate over the last 10 s, or, for latencies,
their median over requests that finished in the last 10 s; p50/p90/p99/mean/max/count are over
the whole test (since the last statistics reset). ITL percentiles come
from a histogram of 0.1 ms bins (there can be millions of gaps); the exact ones are in summary.json.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np

from servesweep.loadgen.distribution import Distribution
from servesweep.loadgen.records import RequestRecord

TAB_KEY = "servesweep-llm"
WINDOW_S = 10.0
ITL_BIN_MS = 0.1
EXTENDED_TABS = [{"title": "LLM", "key": TAB_KEY}]
EXTENDED_TABLES = [{"key": TAB_KEY, "structure": [
    {"key": "name", "title": "Metric"},
    {"key": "now", "title": "Now (last 10 s)"},
    {"key": "p50", "title": "p50"},
    {"key": "p90", "title": "p90"},
    {"key": "p99", "title": "p99"},
    {"key": "mean", "title": "Mean"},
    {"key": "max", "title": "Max"},
    {"key": "count", "title": "Count"},
]}]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _row(name: str, values: list[float] | np.ndarray | Distribution, now: float | None,
         digits: int = 1) -> dict[str, str]:
    if isinstance(values, Distribution):  # bounded memory over a long test (see loadgen/distribution.py)
        d = values.summary()
        if not d["count"]:
            return {"name": name, "now": _fmt(now, digits), "p50": "-", "p90": "-", "p99": "-", "mean": "-",
                    "max": "-", "count": "0"}
        return {"name": name, "now": _fmt(now, digits), "p50": _fmt(d["p50"], digits), "p90": _fmt(d["p90"], digits),
                "p99": _fmt(d["p99"], digits), "mean": _fmt(d["mean"], digits), "max": _fmt(d["max"], digits),
                "count": f"{d['count']:,}"}
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"name": name, "now": _fmt(now, digits), "p50": "-", "p90": "-", "p99": "-", "mean": "-",
                "max": "-", "count": "0"}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"name": name, "now": _fmt(now, digits), "p50": _fmt(p50, digits), "p90": _fmt(p90, digits),
            "p99": _fmt(p99, digits), "mean": _fmt(float(arr.mean()), digits), "max": _fmt(float(arr.max()), digits),
            "count": f"{arr.size:,}"}


def _histogram_percentiles(hist: Counter, qs: list[float]) -> list[float | None]:
    total = sum(hist.values())
    if not total:
        return [None] * len(qs)
    keys = sorted(hist)
    out: list[float | None] = []
    for q in qs:
        rank, seen = q / 100.0 * (total - 1), 0
        for k in keys:
            seen += hist[k]
            if seen > rank:
                out.append(k * ITL_BIN_MS)
                break
    return out


class LiveStats:
    """Latency samples and recent completions of the current test (times on the run's clock)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ttft = Distribution()
        self.tpot = Distribution()
        self.e2e = Distribution()
        self.itl = Counter()
        self.itl_sum = 0.0
        self.itl_max = 0.0
        self.completed = 0
        self.failed = 0
        self.output_tokens = 0
        self.first_sent_s: float | None = None
        self.last_end_s: float | None = None
        self.recent: deque[tuple[float, int, float | None, float | None]] = deque()  # end, tokens, ttft, tpot

    def add(self, record: RequestRecord) -> None:
        if record.sent_s is not None and (self.first_sent_s is None or record.sent_s < self.first_sent_s):
            self.first_sent_s = record.sent_s
        if not record.ok:
            if record.error_kind != "cancelled":
                self.failed += 1
            return
        self.completed += 1
        tokens = record.completion_tokens or 0
        self.output_tokens += tokens
        ttft, tpot, e2e = record.ttft_ms, record.tpot_ms, record.e2e_ms
        if ttft is not None:
            self.ttft.add(ttft)
        if tpot is not None:
            self.tpot.add(tpot)
        if e2e is not None:
            self.e2e.add(e2e)
        for gap in record.itl_ms:
            self.itl[int(gap / ITL_BIN_MS + 0.5)] += 1
            self.itl_sum += gap
            if gap > self.itl_max:
                self.itl_max = gap
        end = record.end_s or 0.0
        if self.last_end_s is None or end > self.last_end_s:
            self.last_end_s = end
        self.recent.append((end, tokens, ttft, tpot))

    def rows(self, now_s: float, samples: list[dict[str, Any]] | None = None,
             metrics_note: str | None = None) -> list[dict[str, str]]:
        """The tab's rows at `now_s` (seconds on the run's clock); `samples` are telemetry samples."""
        while self.recent and self.recent[0][0] < now_s - WINDOW_S:
            self.recent.popleft()
        recent = list(self.recent)
        span = (self.last_end_s - self.first_sent_s) if self.first_sent_s is not None and self.last_end_s else 0.0
        rate = (lambda x: x / span) if span > 0 else (lambda x: None)
        # A test younger than the window: rates over the time it has run, not over 10 s.
        window = min(WINDOW_S, now_s - self.first_sent_s) if self.first_sent_s is not None else WINDOW_S
        per_window = (lambda x: x / window) if window > 0 else (lambda x: None)
        ttft_now = [t for _, _, t, _ in recent if t is not None]
        tpot_now = [t for _, _, _, t in recent if t is not None]
        rows = [
            {"name": "Throughput: output tokens/s", "now": _fmt(per_window(sum(n for _, n, _, _ in recent)), 0),
             "p50": "-", "p90": "-", "p99": "-", "mean": _fmt(rate(self.output_tokens), 0), "max": "-",
             "count": f"{self.output_tokens:,}"},
            {"name": "Throughput: requests/s", "now": _fmt(per_window(len(recent)), 2), "p50": "-", "p90": "-",
             "p99": "-", "mean": _fmt(rate(self.completed), 2), "max": "-", "count": f"{self.completed:,}"},
            _row("Latency: TTFT (ms)", self.ttft, float(np.median(ttft_now)) if ttft_now else None),
            _row("Latency: TPOT (ms)", self.tpot, float(np.median(tpot_now)) if tpot_now else None, 2),
        ]
        n_itl = sum(self.itl.values())
        p50, p90, p99 = _histogram_percentiles(self.itl, [50, 90, 99])
        rows.append({"name": "Latency: ITL (ms)", "now": "-", "p50": _fmt(p50), "p90": _fmt(p90), "p99": _fmt(p99),
                     "mean": _fmt(self.itl_sum / n_itl if n_itl else None, 2),
                     "max": _fmt(self.itl_max if n_itl else None), "count": f"{n_itl:,}"})
        rows.append(_row("Latency: E2E (ms)", self.e2e, None))
        rows.append({"name": "Failures: requests", "now": "-", "p50": "-", "p90": "-", "p99": "-", "mean": "-",
                     "max": "-", "count": f"{self.failed:,}"})
        rows.extend(server_rows(samples or [], metrics_note))
        return rows


def server_rows(samples: list[dict[str, Any]], metrics_note: str | None) -> list[dict[str, str]]:
    """Running batch, waiting requests and KV-cache use from the server's metrics, when it has them."""
    good = [s for s in samples if "scrape_error" not in s]
    rows = []
    for key, name, scale in (("running", "Server: running batch", 1.0), ("waiting", "Server: waiting requests", 1.0),
                             ("kv_usage", "Server: KV cache used (%)", 100.0)):
        values = [s[key] * scale for s in good if key in s]
        if not values:
            continue
        row = _row(name, values, values[-1])
        row["count"] = f"{len(values):,} samples"
        rows.append(row)
    if not rows:
        note = metrics_note or "no samples yet"
        if samples and not good:
            note = f"scrape failed: {samples[-1].get('scrape_error')}"
        rows.append({"name": "Server: metrics", "now": note, "p50": "-", "p90": "-", "p99": "-", "mean": "-",
                     "max": "-", "count": "-"})
    return rows
