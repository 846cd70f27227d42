"""Summary statistics of a set of request records.

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

from collections import Counter
from typing import Iterable

import numpy as np
from pydantic import BaseModel

from servesweep.loadgen.records import ERROR_CANCELLED, TOKENS_FROM_CHUNKS, RequestRecord

PERCENTILES = (50, 90, 95, 99)


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


def distribution(values: Iterable[float] | np.ndarray) -> dict[str, float | None]:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    keys = ["mean", "std", *(f"p{p}" for p in PERCENTILES), "max"]
    if arr.size == 0:
        return {k: None for k in keys} | {"count": 0}
    pct = np.percentile(arr, PERCENTILES)
    out: dict[str, float | None] = {"mean": float(arr.mean()), "std": float(arr.std())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
    out["max"] = float(arr.max())
    out["count"] = int(arr.size)
    return out


def summarize(records: Iterable[RequestRecord], slo: SLO | None = None) -> dict:
    records = list(records)
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok and r.error_kind != ERROR_CANCELLED]
    cancelled = [r for r in measured if r.error_kind == ERROR_CANCELLED]

    starts = [r.sent_s for r in measured if r.sent_s is not None]
    ends = [r.end_s for r in measured if r.end_s is not None and r.error_kind != ERROR_CANCELLED]
    duration = (max(ends) - min(starts)) if starts and ends else 0.0

    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    output_tokens = sum(r.completion_tokens or 0 for r in ok)
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)

    itl = [gap for r in ok for gap in r.itl_ms]
    summary: dict = {
        "completed": len(ok),
        "failed": len(failed),
        "cancelled": len(cancelled),
        "warmup_excluded": len(records) - len(measured),
        "duration_s": duration,
        "request_throughput": per_s(len(ok)),
        "output_token_throughput": per_s(output_tokens),
        "total_token_throughput": per_s(prompt_tokens + output_tokens),
        "total_prompt_tokens": prompt_tokens,
        "total_output_tokens": output_tokens,
        "ttft_ms": distribution(r.ttft_ms for r in ok if r.ttft_ms is not None),
        "first_text_ms": distribution(r.first_text_ms for r in ok if r.first_text_ms is not None),
        "itl_ms": distribution(itl),
        # Chunks read together share one arrival time (see loadgen/http.py): the share of gaps that
        # read exactly 0 says how much of the ITL distribution the client could not resolve.
        "itl_zero_gap_fraction": (sum(1 for g in itl if g == 0.0) / len(itl)) if itl else None,
        "tpot_ms": distribution(r.tpot_ms for r in ok if r.tpot_ms is not None),
        "e2e_ms": distribution(r.e2e_ms for r in ok if r.e2e_ms is not None),
        "itl_per_token_ms": _itl_per_token(ok),
        # How long requests waited inside the client before reaching the socket: near zero unless
        # the load generator's core is saturated (then add --workers).
        "client_send_delay_ms": distribution(r.client_send_delay_ms for r in measured
                                             if r.client_send_delay_ms is not None),
        # Open loop and trace replay: how late each request left against its schedule.
        "arrival_lateness_ms": distribution((r.sent_s - r.scheduled_s) * 1000.0 for r in measured
                                            if r.sent_s is not None and r.scheduled_s is not None),
        "errors": dict(Counter(r.error_kind for r in failed)),
        "error_examples": {kind: next(r.error_message for r in failed if r.error_kind == kind)
                           for kind in {r.error_kind for r in failed}},
        "output_len_mismatch": sum(
            1 for r in ok
            if r.output_len_requested is not None and r.completion_tokens is not None
            and r.completion_tokens != r.output_len_requested
        ),
        "prompt_len_mismatch": sum(
            1 for r in ok
            if r.prompt_len_requested is not None and r.prompt_tokens is not None
            and r.prompt_tokens != r.prompt_len_requested
        ),
    }
    # A count without a source is from records written before sources were kept: usage then.
    sources = Counter(r.completion_tokens_source or ("missing" if r.completion_tokens is None else "usage")
                      for r in ok)
    summary["token_count_source"] = dict(sources)
    summary["token_timing"] = dict(Counter(r.token_timing for r in ok if r.token_timing is not None))
    without_text = sum(r.tokens_without_text for r in ok)
    summary["tokens_without_text"] = without_text
    summary["tokens_without_text_fraction"] = without_text / output_tokens if output_tokens else None
    summary["warnings"] = _token_warnings(sources, len(ok))
    turns = sorted({r.turn for r in ok if r.turn is not None})
    if turns:
        # Prefix caching shows here: a flat TTFT while the context grows turn by turn.
        summary["ttft_by_turn_ms"] = {str(t): distribution(r.ttft_ms for r in ok if r.turn == t
                                                           and r.ttft_ms is not None) for t in turns}
    if slo is not None and not slo.is_empty():
        good = sum(1 for r in ok if slo.met_by(r))
        summary["goodput"] = {
            "slo": slo.model_dump(exclude_none=True),
            "good_requests": good,
            "request_goodput": per_s(good),
            "fraction_good": good / len(measured) if measured else 0.0,
        }
    return summary


def _itl_per_token(ok: list[RequestRecord]) -> float | None:
    """Mean decode time per token after the first, over the streamed requests with two or more
    tokens: sum of (last chunk - first chunk) over sum of (tokens - 1). It equals the mean ITL when
    every chunk is one token, and stays per token when chunks carry several."""
    span = tokens = 0.0
    for r in ok:
        arrivals, n = r.chunk_arrivals_s, r.completion_tokens
        if len(arrivals) >= 2 and n and n >= 2:
            span += arrivals[-1] - arrivals[0]
            tokens += n - 1
    return span / tokens * 1000.0 if tokens else None


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
