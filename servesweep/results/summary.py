"""`summary.json`: one load test (`servesweep run`, one sweep point, one Locust test). Both load
generators fill it through `build_summary` (and each level through `level_entry`), so the two
files have one shape; `write_summary` checks it against `Summary` before it writes, and readers
load it through `read_summary`.

Version history (`schema_version`):
  1  the only version so far. `tool.load_generator` ("locust") is present only for Locust runs;
     fields added since (abort_kind, arrival_clock, ci95, soak, prefix_cache, ...) are optional.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol


from servesweep import __version__
from servesweep.crosscheck import cross_check
from servesweep.errors import OutputError
from servesweep.results.io import Number, OrderedModel, read_result_file, write_json

SUMMARY_FILE = "summary.json"
SUMMARY_SCHEMA_VERSION = 1


class WindowStats(Protocol):
    """The server's telemetry as the summary needs it (servesweep.backends.base.Telemetry)."""

    def window_stats(self, start_s: float, end_s: float) -> dict[str, Any]: ...


class Distribution(OrderedModel):
    """A latency's statistics over the measured requests (ttft_ms, tpot_ms, itl_ms, e2e_ms): None
    where no request gave one."""

    mean: Number | None = None
    std: Number | None = None
    p50: Number | None = None
    p90: Number | None = None
    p95: Number | None = None
    p99: Number | None = None
    max: Number | None = None
    count: int | None = None

    def at(self, q: str) -> Number | None:
        """The figure named `q` (p50, p90, p99, mean, ...); None for one it does not hold."""
        return getattr(self, q, None)


class Interval(OrderedModel):
    """One figure of `ci95` (servesweep.confidence): the mean over the repeats, its Student-t 95 %
    interval (low, high; None for one repeat) and the per-repeat values."""

    mean: Number | None = None
    low: Number | None = None
    high: Number | None = None
    n: int | None = None
    values: list[Number] | None = None
    method: str | None = None


class Goodput(OrderedModel):
    """`goodput`: the requests that met every SLO (loadgen.stats)."""

    slo: dict[str, Any] | None = None
    good_requests: int | None = None
    request_goodput: Number | None = None
    fraction_good: Number | None = None


class TimingCheck(OrderedModel):
    """The timing cross-check's verdict on a level (servesweep.crosscheck)."""

    suspect: bool | None = None
    reasons: list[str] | None = None


class PrefixCache(OrderedModel):
    """`prefix_cache`, per level: the server's prefix-cache hit rate and whether it reads high."""

    hit_rate: Number | None = None
    warn: bool | None = None


class WindowTelemetry(OrderedModel):
    """The server's figures over a window (servesweep.backends.telemetry `window_stats`): None
    where the window held no sample."""

    running_batch_mean: Number | None = None
    running_batch_peak: Number | None = None
    waiting_peak: Number | None = None
    kv_cache_peak_frac: Number | None = None
    kv_cache_peak_bytes: Number | None = None
    kv_pool_bytes: Number | None = None
    kv_pool_tokens: Number | None = None
    preemptions: Number | None = None
    oom_margin_pct: Number | None = None
    device_mem_peak_bytes: Number | None = None
    device_mem_total_bytes: Number | None = None
    gpu_power_mean_w: Number | None = None  # NVML board power over the window, summed over the GPUs


class ServerRecord(OrderedModel):
    """What the backend recorded about the server it launched (`server`): its GPUs, its measured
    start, its KV pool at start-up, its names for the common knobs and its memory rule."""

    backend: str | None = None
    version: str | None = None
    config: dict[str, Any] | None = None
    command: list[str] | None = None
    gpus: list[str] | None = None  # device names, as the server's host reports them
    startup_s: Number | None = None  # launch to ready
    kv_pool: dict[str, Any] | None = None  # the pool as the server logged it (block_size, tokens, bytes, ...)
    kv_pool_tokens: Number | None = None
    kv_pool_bytes: Number | None = None
    knobs: dict[str, str] | None = None
    memory_fraction_of: str | None = None

    @property
    def block_size(self) -> int | None:
        return (self.kv_pool or {}).get("block_size")


class LevelEntry(OrderedModel):
    """One item of `levels`: the level as run, its statistics (servesweep.loadgen.stats), the
    server's telemetry over its window and the timing cross-check's verdict on it."""

    label: str
    spec: dict[str, Any] = {}
    start_s: float = 0.0
    end_s: float = 0.0
    prompt_pool_wrapped: bool = False
    completed: int = 0
    failed: int = 0
    telemetry: WindowTelemetry | None = None
    timing_check: TimingCheck | None = None


class Summary(OrderedModel):
    """`summary.json`: the fields readers rely on; statistics and the writer's own sections (trace,
    sessions, soak, ci95, locust, workers, ...) are kept as they are."""

    schema_version: int = SUMMARY_SCHEMA_VERSION
    tool: dict[str, Any] = {}
    target: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    seed: int | None = None
    levels_requested: list[dict[str, Any]] = []
    slo: dict[str, Any] | None = None
    tokenizer: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    host: dict[str, Any] = {}
    interrupted: bool = False
    abort_reason: str | None = None
    completed: int = 0
    failed: int = 0
    warnings: list[str] = []
    levels: list[LevelEntry] = []
    timing_suspect_levels: list[str] = []
    telemetry: WindowTelemetry | None = None
    server: ServerRecord | None = None
    workers: dict[str, Any] | None = None
    output_error: str | None = None
    summary_path: str | None = None
    # The whole test's statistics (servesweep.loadgen.stats) and what the load test adds after
    # build_summary: its repeats and their intervals, the prefix cache's hit rate per level.
    request_throughput: Number | None = None
    output_token_throughput: Number | None = None
    total_token_throughput: Number | None = None
    ttft_ms: Distribution | None = None
    tpot_ms: Distribution | None = None
    itl_ms: Distribution | None = None
    e2e_ms: Distribution | None = None
    goodput: Goodput | None = None
    errors: dict[str, int] | None = None
    error_examples: dict[str, str] | None = None
    repeats: int | None = None
    ci95: dict[str, dict[str, Interval]] | None = None
    prefix_cache: dict[str, PrefixCache] | None = None
    suspect: bool | None = None  # the timing cross-check's verdict, where a writer put it at the top
    timing_check: TimingCheck | None = None

    def quantile(self, metric: str, q: str) -> Number | None:
        """`metric` (ttft_ms, tpot_ms, itl_ms, e2e_ms) at `q` (p50, p90, p99, ...)."""
        dist = getattr(self, metric, None)
        return dist.at(q) if dist is not None else None

    @property
    def request_goodput(self) -> Number | None:
        return self.goodput.request_goodput if self.goodput is not None else None

    # --- The headline: with repeats, the means over the repeats -------------------------------
    # The test's own figures above span its whole window, gaps and warm-ups between repeats
    # included; with repeats the report and the searches compare the means over the repeats
    # (ci95 of the first level). A view, never written: each field means one thing in every file.
    def repeat_interval(self, key: str) -> Interval | None:
        """The first level's ci95 entry `key` (output_tok_s, request_throughput, goodput, ttft_ms.p99, ...)."""
        first = next(iter((self.ci95 or {}).values()), None)
        return (first or {}).get(key)

    def _repeat_mean(self, key: str) -> Number | None:
        got = self.repeat_interval(key)
        return got.mean if got is not None else None

    @property
    def headline_output_token_throughput(self) -> Number | None:
        mean = self._repeat_mean("output_tok_s")
        return mean if mean is not None else self.output_token_throughput

    @property
    def headline_request_throughput(self) -> Number | None:
        mean = self._repeat_mean("request_throughput")
        return mean if mean is not None else self.request_throughput

    @property
    def headline_request_goodput(self) -> Number | None:
        if self.goodput is None:
            return None
        mean = self._repeat_mean("goodput")
        return mean if mean is not None else self.goodput.request_goodput

    def headline_view(self) -> dict[str, Any]:
        """The summary as a file's dict with the headline in the figures' places (what a check on
        a sweep point's throughput, servesweep.reports.assertions, reads); never written."""
        data = self.to_file()
        for key, value in (("output_token_throughput", self.headline_output_token_throughput),
                           ("request_throughput", self.headline_request_throughput)):
            if key in data:
                data[key] = value
        if isinstance(data.get("goodput"), dict):
            data["goodput"] = {**data["goodput"], "request_goodput": self.headline_request_goodput}
        return data


def level_entry(label: str, spec: dict[str, Any], start_s: float, end_s: float, prompt_pool_wrapped: bool,
                stats: dict[str, Any], telemetry: WindowStats | None) -> dict[str, Any]:
    """One item of `levels` from the level's statistics (RunStats.summary())."""
    entry: dict[str, Any] = {"label": label, "spec": spec, "start_s": start_s, "end_s": end_s,
                             "prompt_pool_wrapped": prompt_pool_wrapped}
    entry.update(stats)
    if telemetry is not None:
        entry["telemetry"] = telemetry.window_stats(start_s, end_s)
    check = cross_check(stats, entry.get("telemetry"))
    if check is not None:
        entry["timing_check"] = check
    return entry


def build_summary(*, target: dict[str, Any], workload: dict[str, Any], seed: int | None,
                  levels_requested: list[dict[str, Any]], slo: dict[str, Any] | None, tokenizer: str | None,
                  started_at: dt.datetime, host: dict[str, Any], stats: dict[str, Any], levels: list[dict[str, Any]],
                  telemetry: WindowStats | None = None, interrupted: bool = False, abort_reason: str | None = None,
                  load_generator: str | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of one load test: the common head, the generator's own facts about the run
    (`run`: trace, sessions, clock; or Locust's scenario and load shape), the whole test's
    statistics, its levels (`level_entry`), and the telemetry over all of them. The writer adds its
    own sections after (repeats, soak, workers, ...) and writes it with `write_summary`."""
    tool = {"name": "servesweep", "version": __version__}
    if load_generator is not None:
        tool["load_generator"] = load_generator
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "tool": tool,
        "target": target,
        "workload": workload,
        "seed": seed,
        "levels_requested": levels_requested,
        "slo": slo,
        "tokenizer": tokenizer,
        "started_at": started_at.isoformat(),
        "ended_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "host": host,
        "interrupted": interrupted,
        "abort_reason": abort_reason,
        **(run or {}),
    }
    summary.update(stats)
    summary["levels"] = levels
    summary["timing_suspect_levels"] = [lv["label"] for lv in levels if (lv.get("timing_check") or {}).get("suspect")]
    if telemetry is not None and levels:
        summary["telemetry"] = telemetry.window_stats(min(lv["start_s"] for lv in levels),
                                                      max(lv["end_s"] for lv in levels))
    return summary


def write_summary(out: Path, summary: dict[str, Any], name: str = SUMMARY_FILE) -> Path | None:
    """`out/summary.json` (or `name`), or, when the disk refuses it, the same summary in a fallback place (the
    temporary directory, then the home directory), with `output_error` saying why and
    `summary_path` where it went. Returns where it was written; None when nowhere would take it.
    The summary is checked against `Summary` first (a writer that broke the shape is a bug) and
    written as built, key order and all."""
    Summary.model_validate(summary)
    try:
        write_json(out / name, summary)
        return out / name
    except OutputError as exc:
        summary["output_error"] = summary.get("output_error") or str(exc)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"servesweep-summary-{stamp}-{os.getpid()}.json"
    for folder in (Path(tempfile.gettempdir()), Path.home()):
        path = folder / name
        summary["summary_path"] = str(path)
        try:
            write_json(path, summary)
            return path
        except OutputError:
            continue
    summary["summary_path"] = None
    return None


def read_summary(path: Path) -> Summary:
    return read_result_file(path, Summary, SUMMARY_SCHEMA_VERSION, "the run's records.jsonl holds every request; "
                            "rerun the measurement for a new summary")
