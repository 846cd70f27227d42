"""Soak runs: one summary line per interval of the measured window (`--report-interval`), written
to `intervals.jsonl` as each interval ends, a plot of them, and a verdict of drift between the
first and the last full interval.

An interval holds the requests that *completed* in it (on the client's clock); its rates divide by
the interval's length, not by a span of sends and ends, so back-to-back intervals add up to the run.
The last interval of a level can be shorter (`partial`); the drift verdict skips partial intervals.

Drift: for each of throughput (output tokens/s), TTFT p50/p99 and TPOT p50/p99, the relative change
from the first full interval to the last; "drifted" where one moves the bad way (throughput down,
latency up) by more than DRIFT_LIMIT, where the last interval failed requests the first did not,
or where any interval completed nothing while requests were in flight (a stall, however short the
run's first-to-last comparison makes it look).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from servesweep.loadgen.stats import RunStats
from servesweep.results import append_jsonl

INTERVALS_FILE = "intervals.jsonl"
INTERVALS_PLOT = "intervals.png"
INTERVALS_SCHEMA_VERSION = 1
DRIFT_LIMIT = 0.10  # a 10 % change, the bad way, is a drift
# (key in an interval row, what a worse value is): the quantities the verdict compares.
DRIFT_KEYS = (("output_token_throughput", "lower"), ("ttft_p50_ms", "higher"), ("ttft_p99_ms", "higher"),
              ("tpot_p50_ms", "higher"), ("tpot_p99_ms", "higher"))


class IntervalRow(BaseModel):
    """One line of intervals.jsonl."""

    schema_version: int = INTERVALS_SCHEMA_VERSION
    level: str
    index: int
    start_s: float
    end_s: float
    partial: bool
    completed: int
    failed: int
    cancelled: int
    request_throughput: float
    output_token_throughput: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    itl_p99_ms: float | None
    e2e_p99_ms: float | None
    errors: dict[str, int]
    telemetry: dict[str, Any] | None = None
    # Requests in flight at the interval's end: with `completed: 0`, the server stalled.
    in_flight: int | None = None

    @property
    def stalled(self) -> bool:
        return self.completed == 0 and self.failed == 0 and bool(self.in_flight)


def interval_row(level: str, index: int, start_s: float, end_s: float, interval_s: float, stats: RunStats,
                 telemetry: dict[str, Any] | None, in_flight: int | None = None) -> IntervalRow:
    s = stats.summary()
    length = end_s - start_s
    return IntervalRow(
        level=level, index=index, start_s=start_s, end_s=end_s, partial=length < interval_s * 0.999,
        completed=s["completed"], failed=s["failed"], cancelled=s["cancelled"],
        request_throughput=s["completed"] / length, output_token_throughput=s["total_output_tokens"] / length,
        ttft_p50_ms=s["ttft_ms"]["p50"], ttft_p99_ms=s["ttft_ms"]["p99"], tpot_p50_ms=s["tpot_ms"]["p50"],
        tpot_p99_ms=s["tpot_ms"]["p99"], itl_p99_ms=s["itl_ms"]["p99"], e2e_p99_ms=s["e2e_ms"]["p99"],
        errors=s["errors"], telemetry=telemetry, in_flight=in_flight)


def write_row(out_dir: Path, row: IntervalRow) -> None:
    append_jsonl(out_dir / INTERVALS_FILE, row.model_dump(mode="json"))


def drift_verdict(rows: list[IntervalRow]) -> dict[str, Any]:
    """First vs last full interval of each level (see the module docstring)."""
    by_level: dict[str, list[IntervalRow]] = {}
    stalls: dict[str, list[str]] = {}
    for row in rows:
        if not row.partial:
            by_level.setdefault(row.level, []).append(row)
        if row.stalled:
            stalls.setdefault(row.level, []).append(
                f"interval {row.index} ({row.start_s:.1f}-{row.end_s:.1f} s): nothing completed with "
                f"{row.in_flight} requests in flight (the server stalled)")
    levels: dict[str, Any] = {}
    for label in {row.level: None for row in rows}:
        full = by_level.get(label, [])
        if len(full) < 2:
            stalled = stalls.get(label, [])
            levels[label] = ({"verdict": "drifted", "why": stalled, "full_intervals": len(full)} if stalled else
                             {"verdict": "not enough intervals", "full_intervals": len(full)})
            continue
        first, last = full[0], full[-1]
        changes: dict[str, float | None] = {}
        drifted: list[str] = []
        for key, worse in DRIFT_KEYS:
            a, b = getattr(first, key), getattr(last, key)
            change = (b - a) / a if a and b is not None else None
            changes[key] = change
            if change is not None and (change > DRIFT_LIMIT if worse == "higher" else change < -DRIFT_LIMIT):
                drifted.append(f"{key} {change:+.1%}")
        if last.failed > first.failed:
            drifted.append(f"failures {first.failed} -> {last.failed}")
        drifted.extend(stalls.get(label, []))
        levels[label] = {"verdict": "drifted" if drifted else "stable", "why": drifted,
                         "first_interval": first.index, "last_interval": last.index,
                         "full_intervals": len(full), "relative_change": changes}
    verdicts = {v["verdict"] for v in levels.values()}
    overall = "drifted" if "drifted" in verdicts else "stable" if verdicts == {"stable"} else "not enough intervals"
    return {"verdict": overall, "limit": DRIFT_LIMIT, "levels": levels}


def plot_intervals(rows: list[IntervalRow], path: Path) -> Path | None:
    """Throughput, TTFT and TPOT percentiles, failures and (where sampled) KV-cache use per interval."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = [(r.start_s + r.end_s) / 2 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(mid, [r.output_token_throughput for r in rows], "o-")
    axes[0].set_ylabel("output tok/s")
    for key, style in (("ttft_p50_ms", "o-"), ("ttft_p99_ms", "s--")):
        axes[1].plot(mid, [getattr(r, key) for r in rows], style, label=key)
    axes[1].set_ylabel("TTFT ms")
    axes[1].legend(fontsize=7)
    for key, style in (("tpot_p50_ms", "o-"), ("tpot_p99_ms", "s--")):
        axes[2].plot(mid, [getattr(r, key) for r in rows], style, label=key)
    axes[2].set_ylabel("TPOT ms")
    axes[2].legend(fontsize=7)
    axes[3].bar(mid, [r.failed for r in rows], width=(rows[0].end_s - rows[0].start_s) * 0.8, color="#c33")
    axes[3].set_ylabel("failed")
    kv = [(r.telemetry or {}).get("kv_cache_peak_frac") for r in rows]
    if any(v is not None for v in kv):
        ax = axes[3].twinx()
        ax.plot(mid, [v if v is not None else float("nan") for v in kv], "k.-")
        ax.set_ylabel("KV cache peak (fraction)")
    axes[3].set_xlabel("seconds since start (interval middles)")
    fig.suptitle("per-interval summary")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
