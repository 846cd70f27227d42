"""Summary statistics of a set of request records, computed as the records arrive.

`RunStats` takes one record at a time (`add`) and keeps only counters and one `Distribution` per
latency (servesweep.loadgen.distribution: exact up to 131,072 values, then a histogram whose
percentiles are within 0.05 %), so a run's client memory does not grow with its length; the
records themselves can be released once written. `merge` adds another `RunStats` (another level,
another worker process). `summarize(records)` is the same computation over an iterable.

Warm-up requests are excluded. The measurement window runs from the first measured request's
send to the last measured request's end, so throughput is not diluted by warm-up or by
start-up time. Goodput counts requests meeting every given SLO, per second of that window.

`token_count_source` counts, over the completed measured requests, where their output token
count came from: "usage" (the server's), "chunks" (a stream without usage: one token per content
chunk) or "missing" (no count: they add nothing to output throughput and have no TPOT).
`token_timing` counts the streamed requests by the rule that found their token-bearing chunks
("usage_per_chunk" or "chunks", see servesweep.loadgen.exchange). `ttft_ms` is the time to the
first generated token; `first_text_ms`, the time to the first visible text, is kept apart: the two
differ when tokens decode to no text (`tokens_without_text`, and its share of all output tokens).
`itl_per_token_ms` is the stream's decode time spread over its tokens after the first, the figure
TPOT must match (the timing check compares them).
`warnings` holds one line for each way the numbers are less exact than they look.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

import numpy as np
from pydantic import BaseModel

from servesweep.loadgen.distribution import PERCENTILES, Distribution, exact_summary
from servesweep.loadgen.records import ERROR_CANCELLED, ERROR_TRUNCATED, TOKENS_FROM_CHUNKS, RequestRecord

__all__ = ["PERCENTILES", "SLO", "RunStats", "distribution", "summarize", "REQUEST_METRICS"]


class SLO(BaseModel):
    """Per-request latency limits; a request is 'good' when it meets every one given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def is_empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None

    def met_by(self, record: RequestRecord) -> bool:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            limit = getattr(self, name)
            if limit is None:
                continue
            value = getattr(record, name)
            if value is None or value > limit:
                return False
        return True


def _lateness_ms(r: RequestRecord) -> float | None:
    if r.sent_s is None or r.scheduled_s is None:
        return None
    return (r.sent_s - r.scheduled_s) * 1000.0


# Per-request metrics summarized as distributions: (summary key, value of a record, over measured
# requests (True) or completed ones only (False)). Adding a metric is one line here.
REQUEST_METRICS: tuple[tuple[str, Callable[[RequestRecord], float | None], bool], ...] = (
    ("ttft_ms", lambda r: r.ttft_ms, False),
    ("first_text_ms", lambda r: r.first_text_ms, False),
    ("tpot_ms", lambda r: r.tpot_ms, False),
    ("e2e_ms", lambda r: r.e2e_ms, False),
    # How long requests waited inside the client before reaching the socket: near zero unless
    # the load generator's core is saturated (then add --workers).
    ("client_send_delay_ms", lambda r: r.client_send_delay_ms, True),
    # Open loop and trace replay: how late each request left against its schedule.
    ("arrival_lateness_ms", _lateness_ms, True),
)
_OK_METRICS = tuple((name, get) for name, get, measured in REQUEST_METRICS if not measured)
_MEASURED_METRICS = tuple((name, get) for name, get, measured in REQUEST_METRICS if measured)


def distribution(values: Iterable[float] | np.ndarray) -> dict[str, float | None]:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if arr.size == 0:
        return Distribution().summary()
    return exact_summary(arr)


class RunStats:
    """Everything `summarize` reports, accumulated record by record in bounded memory."""

    __slots__ = ("slo", "total", "completed", "failed", "cancelled", "first_sent_s", "last_end_s",
                 "prompt_tokens", "output_tokens", "dists", "itl", "errors", "error_examples",
                 "output_len_mismatch", "prompt_len_mismatch", "sources", "by_turn", "good", "measured",
                 "timing", "without_text", "decode_span_s", "decode_tokens")

    def __init__(self, slo: SLO | None = None) -> None:
        self.slo = slo if slo is not None and not slo.is_empty() else None
        self.total = self.measured = self.completed = self.failed = self.cancelled = 0
        self.first_sent_s = math.inf
        self.last_end_s = -math.inf
        self.prompt_tokens = self.output_tokens = 0
        self.dists = {name: Distribution() for name, _, _ in REQUEST_METRICS}
        self.itl = Distribution()
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, tuple[int, str | None]] = {}  # kind -> (lowest request id, message)
        self.output_len_mismatch = self.prompt_len_mismatch = 0
        self.sources: Counter[str] = Counter()
        self.by_turn: dict[int, Distribution] = {}
        self.good = 0
        self.timing: Counter[str] = Counter()
        self.without_text = 0
        # For itl_per_token_ms: sums of (last chunk - first chunk) and of (tokens - 1) over the
        # streams with two or more tokens, so it stays per token when chunks carry several.
        self.decode_span_s = 0.0
        self.decode_tokens = 0

    def add(self, r: RequestRecord) -> None:
        self.total += 1
        if r.warmup:
            return
        self.measured += 1
        dists = self.dists
        for name, get in _MEASURED_METRICS:
            value = get(r)
            if value is not None:
                dists[name].add(value)
        if r.sent_s is not None and r.sent_s < self.first_sent_s:
            self.first_sent_s = r.sent_s
        kind = r.error_kind
        if kind == ERROR_CANCELLED:
            self.cancelled += 1
            return
        if r.end_s is not None and r.end_s > self.last_end_s:
            self.last_end_s = r.end_s
        if not r.ok:
            self.failed += 1
            self.errors[kind] += 1
            seen = self.error_examples.get(kind)
            if seen is None or r.request_id < seen[0]:
                self.error_examples[kind] = (r.request_id, r.error_message)
            return
        self.completed += 1
        self.prompt_tokens += r.prompt_tokens or 0
        self.output_tokens += r.completion_tokens or 0
        for name, get in _OK_METRICS:
            value = get(r)
            if value is not None:
                dists[name].add(value)
        arrivals = r.chunk_arrivals_s
        if len(arrivals) > 1:
            self.itl.extend(np.diff(np.array(arrivals, dtype=np.float64)) * 1000.0)
            n = r.completion_tokens
            if n and n >= 2:
                self.decode_span_s += arrivals[-1] - arrivals[0]
                self.decode_tokens += n - 1
        if r.token_timing is not None:
            self.timing[r.token_timing] += 1
        self.without_text += r.tokens_without_text
        if r.output_len_requested is not None and r.completion_tokens is not None \
                and r.completion_tokens != r.output_len_requested:
            self.output_len_mismatch += 1
        if r.prompt_len_requested is not None and r.prompt_tokens is not None \
                and r.prompt_tokens != r.prompt_len_requested:
            self.prompt_len_mismatch += 1
        # A count without a source is from records written before sources were kept: usage then.
        self.sources[r.completion_tokens_source or ("missing" if r.completion_tokens is None else "usage")] += 1
        if r.turn is not None:
            ttft = r.ttft_ms
            dist = self.by_turn.get(r.turn)
            if dist is None:
                dist = self.by_turn[r.turn] = Distribution()
            if ttft is not None:
                dist.add(ttft)
        if self.slo is not None and self.slo.met_by(r):
            self.good += 1

    def merge(self, other: "RunStats") -> "RunStats":
        for name in ("total", "measured", "completed", "failed", "cancelled", "prompt_tokens", "output_tokens",
                     "output_len_mismatch", "prompt_len_mismatch", "good", "without_text", "decode_span_s",
                     "decode_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_sent_s = min(self.first_sent_s, other.first_sent_s)
        self.last_end_s = max(self.last_end_s, other.last_end_s)
        for name, dist in other.dists.items():
            self.dists[name].merge(dist)
        self.itl.merge(other.itl)
        self.errors.update(other.errors)
        for kind, example in other.error_examples.items():
            seen = self.error_examples.get(kind)
            if seen is None or example[0] < seen[0]:
                self.error_examples[kind] = example
        self.sources.update(other.sources)
        self.timing.update(other.timing)
        for turn, dist in other.by_turn.items():
            self.by_turn.setdefault(turn, Distribution()).merge(dist)
        return self

    @property
    def duration_s(self) -> float:
        if self.first_sent_s == math.inf or self.last_end_s == -math.inf:
            return 0.0
        return self.last_end_s - self.first_sent_s

    def summary(self) -> dict:
        duration = self.duration_s
        per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
        itl = self.itl
        d = {name: dist.summary() for name, dist in self.dists.items()}
        summary: dict = {
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "warmup_excluded": self.total - self.measured,
            "duration_s": duration,
            "request_throughput": per_s(self.completed),
            "output_token_throughput": per_s(self.output_tokens),
            "total_token_throughput": per_s(self.prompt_tokens + self.output_tokens),
            "total_prompt_tokens": self.prompt_tokens,
            "total_output_tokens": self.output_tokens,
            "ttft_ms": d.pop("ttft_ms"),
            "first_text_ms": d.pop("first_text_ms"),
            "itl_ms": itl.summary(),
            # Chunks read together share one arrival time (see loadgen/http.py): the share of gaps that
            # read exactly 0 says how much of the ITL distribution the client could not resolve.
            "itl_zero_gap_fraction": itl.zero_count() / itl.count if itl.count else None,
            "tpot_ms": d.pop("tpot_ms"),
            "e2e_ms": d.pop("e2e_ms"),
            "itl_per_token_ms": self.decode_span_s / self.decode_tokens * 1000.0 if self.decode_tokens else None,
            **d,
            "errors": dict(self.errors),
            "error_examples": {kind: msg for kind, (_, msg) in self.error_examples.items()},
            "output_len_mismatch": self.output_len_mismatch,
            "prompt_len_mismatch": self.prompt_len_mismatch,
            "token_count_source": dict(self.sources),
            "token_timing": dict(self.timing),
            "tokens_without_text": self.without_text,
            "tokens_without_text_fraction": self.without_text / self.output_tokens if self.output_tokens else None,
            "warnings": _token_warnings(self.sources, self.completed)
                        + _truncation_warnings(self.errors.get(ERROR_TRUNCATED, 0), self.completed + self.failed),
        }
        if self.by_turn:
            # Prefix caching shows here: a flat TTFT while the context grows turn by turn.
            summary["ttft_by_turn_ms"] = {str(t): self.by_turn[t].summary() for t in sorted(self.by_turn)}
        if self.slo is not None:
            summary["goodput"] = {
                "slo": self.slo.model_dump(exclude_none=True),
                "good_requests": self.good,
                "request_goodput": per_s(self.good),
                "fraction_good": self.good / self.measured if self.measured else 0.0,
            }
        return summary


def summarize(records: Iterable[RequestRecord], slo: SLO | None = None) -> dict:
    stats = RunStats(slo)
    for r in records:
        stats.add(r)
    return stats.summary()


def _token_warnings(sources: Counter, n_ok: int) -> list[str]:
    warnings = []
    if sources.get(TOKENS_FROM_CHUNKS):
        warnings.append(
            f"{sources[TOKENS_FROM_CHUNKS]} of {n_ok} completed requests streamed no usage: their output "
            "tokens were counted as content chunks, one token per chunk (an undercount where a chunk "
            "carries several); output throughput and TPOT rest on that count")
    if sources.get("missing"):
        warnings.append(
            f"{sources['missing']} of {n_ok} completed requests reported no token counts: they add "
            "nothing to output throughput and have no TPOT")
    return warnings


# A share of truncated answers at or above this is said loudly (console in red, a warning).
TRUNCATED_LOUD_FRACTION = 0.05


def _truncation_warnings(truncated: int, finished: int) -> list[str]:
    if not truncated:
        return []
    return [f"{truncated} of {finished} responses were TRUNCATED by the server (fewer tokens than asked while EOS "
            "was ignored, or an unexpected finish_reason): counted as failed (error 'truncated'), left out of "
            "throughput and goodput"]
