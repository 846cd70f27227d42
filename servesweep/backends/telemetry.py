"""Watch a server while it is loaded: its Prometheus `/metrics` and the GPUs it uses.

A background thread samples every `interval_s` and appends each sample to `telemetry.jsonl`
in the results directory (times on the load generator's clock, so samples line up with
request records). Only the metric lines servesweep uses are parsed, with prometheus-client's
text parser, to keep the sampler's CPU cost off the load generator.

OOM margin, as reported here:
  - `oom_margin_pct` = (1 - peak KV-cache usage) x 100. vLLM preallocates its KV pool, so
    device memory stays flat under load; what runs out is the pool. When the server preempted
    requests during the window, it has already run out: `preempted` is set and the margin is
    reported as 0 whatever the usage gauge says (usage drops right after a preemption).
  - `device_headroom_pct` = (1 - peak device memory used / device total) x 100, from NVML;
    null without a GPU.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from servesweep import controlplane
from servesweep.backends.gpu import Nvml

def fetch_metrics_text(url: str, timeout_s: float = 2.0) -> str:
    with controlplane.urlopen(url, timeout=timeout_s) as resp:
        return resp.read().decode("utf-8", errors="replace")


@dataclass(frozen=True)
class PrometheusMetrics:
    """A backend's map from its Prometheus names to servesweep's neutral keys."""

    gauges: dict[str, str]
    counters: dict[str, str]  # without the _total suffix
    histograms: dict[str, str] = field(default_factory=dict)  # name -> key; _sum/_count become key_sum/key_count
    max_keys: frozenset[str] = frozenset()  # keys whose value over engines is the max, not the sum

    @cached_property
    def prefixes(self) -> tuple[str, ...]:
        names = [n + "{" for n in self.gauges] + [n + " " for n in self.gauges]
        names += [n + "_total" for n in self.counters]
        names += [n + suffix for n in self.histograms for suffix in ("_sum", "_count")]
        return tuple(names)


def parse_prometheus(text: str, metrics: PrometheusMetrics) -> dict[str, float]:
    """The gauges, counters and histogram sums/counts a backend maps, summed over engines."""
    lines = [ln for ln in text.splitlines() if ln.startswith(metrics.prefixes)]
    sample: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for s in family.samples:
            name = s.name
            key = None
            if name.endswith("_total"):
                key = metrics.counters.get(name[:-6])
            elif name.endswith(("_sum", "_count")):
                base, _, suffix = name.rpartition("_")
                hist = metrics.histograms.get(base)
                key = f"{hist}_{suffix}" if hist else None
            if key is None:
                key = metrics.gauges.get(name) or metrics.counters.get(name)
            if key is None:
                continue
            if key in metrics.max_keys:
                sample[key] = max(sample.get(key, 0.0), s.value)
            else:
                sample[key] = sample.get(key, 0.0) + s.value
    return sample


class PrometheusReader:
    """Reads a Prometheus text endpoint into one neutral sample per scrape."""

    Metrics = PrometheusMetrics

    def __init__(self, url: str, metrics: PrometheusMetrics, timeout_s: float = 2.0) -> None:
        self.url = url
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.source = f"Prometheus {url}"

    def read(self) -> list[dict[str, float]]:
        return [parse_prometheus(fetch_metrics_text(self.url, self.timeout_s), self.metrics)]


class MetricsReader(Protocol):
    """One backend's way of reading its server's metrics into neutral samples: `running`,
    `waiting`, `kv_usage` (0-1), counters `preemptions`, `prompt_tokens`, `generation_tokens`,
    `prefix_hits`, `prefix_queries`, and latency histogram sums/counts `ttft_*`, `itl_*`,
    `e2e_*` (seconds). A read may return several samples (servers that queue per-iteration
    statistics) or raise OSError/ValueError when the endpoint cannot be read."""

    source: str

    def read(self) -> list[dict[str, float]]: ...


def parse_cache_config(text: str) -> dict[str, Any] | None:
    """Labels of `vllm:cache_config_info` (num_gpu_blocks, block_size, cache_dtype, ...)."""
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            for family in text_string_to_metric_families(line + "\n"):
                for s in family.samples:
                    return dict(s.labels)
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def kv_pool_from_cache_config(cache: dict[str, Any] | None, bytes_per_token: int | None) -> dict[str, Any]:
    """KV pool size in tokens and bytes from the server's own report, or from the model shape."""
    if not cache:
        return {"tokens": None, "bytes": None, "source": None}
    blocks = _int_or_none(cache.get("num_gpu_blocks"))
    block_size = _int_or_none(cache.get("block_size"))
    tokens = _int_or_none(cache.get("kv_cache_size_tokens"))
    if tokens is None and blocks and block_size:
        tokens = blocks * block_size
    reported = _int_or_none(cache.get("kv_cache_memory_bytes"))
    if reported:
        return {"tokens": tokens, "bytes": reported, "source": "server (kv_cache_memory_bytes)",
                "num_blocks": blocks, "block_size": block_size, "cache_dtype": cache.get("cache_dtype")}
    size = tokens * bytes_per_token if tokens and bytes_per_token else None
    return {"tokens": tokens, "bytes": size, "source": "blocks x block_size x model KV bytes per token",
            "num_blocks": blocks, "block_size": block_size, "cache_dtype": cache.get("cache_dtype")}


# Gauges whose peak over the iterations of one answer is what matters.
_PEAK_KEYS = frozenset({"running", "waiting", "kv_usage", "server_gpu_mem_bytes"})


class TelemetrySampler:
    def __init__(
        self,
        reader: MetricsReader,
        out_path: Path,
        interval_s: float = 0.25,
        kv_pool: dict[str, Any] | None = None,
        gpu_indices: list[int] | None = None,
    ) -> None:
        self.reader = reader
        self.out_path = out_path
        self.interval_s = interval_s
        self.kv_pool = kv_pool or {"tokens": None, "bytes": None}
        self.nvml = Nvml()
        self.gpu_indices = gpu_indices if gpu_indices is not None else self.nvml.visible_indices()
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._first = threading.Event()
        self._wake = threading.Event()  # set by stop() and sample_now()
        self._lock = threading.Lock()
        self._asked: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.write_error: str | None = None  # why telemetry.jsonl stopped (disk full), if it did

    @property
    def gpu_available(self) -> bool:
        return self.nvml.available and bool(self.gpu_indices)

    def start(self, t0: float, first_sample_timeout_s: float = 2.0) -> None:
        """Start sampling; returns once the first sample is taken (or after the timeout), so a
        level that starts right away still has a reading before it: counters and server latency
        histograms are differenced from that reading."""
        self._t0 = t0
        self._stop.clear()
        self._first.clear()
        self._thread = threading.Thread(target=self._loop, name="servesweep-telemetry", daemon=True)
        self._thread.start()
        self._first.wait(first_sample_timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        # Readers that own a server-side queue (TensorRT-LLM's JSON /metrics) release it here.
        close = getattr(self.reader, "close", None)
        if callable(close):
            close()

    def sample_now(self, timeout_s: float = 2.0) -> None:
        """Take a sample now, on the sampler's own thread, and wait for it: a level's edges need a
        reading of the server's counters right there (the cross-check's histogram means)."""
        if self._thread is None:
            return
        taken = threading.Event()
        with self._lock:
            self._asked.append(taken)
        self._wake.set()
        taken.wait(timeout_s)

    def _open(self) -> Any:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.out_path, "ab")

    def _write_failed(self, exc: OSError, f: Any) -> None:
        """The disk refused a sample (full, read-only): sampling goes on in memory, so the
        summary's per-level figures still come; the file stops, and `write_error` says why."""
        self.write_error = f"cannot write {self.out_path}: {exc.strerror or exc}"
        if f is not None:
            try:
                f.close()  # flushing what is buffered may meet the full disk again
            except OSError:
                pass

    def _loop(self) -> None:
        try:
            f = self._open()
        except OSError as exc:
            f = None
            self._write_failed(exc, None)
        try:
            next_tick = time.perf_counter()
            while not self._stop.is_set():
                with self._lock:  # asked before this sample starts: this sample answers them
                    asked, self._asked = self._asked, []
                self._wake.clear()
                sample = self._sample_once()
                self.samples.append(sample)
                if f is not None:
                    try:
                        f.write(orjson.dumps(sample) + b"\n")
                        f.flush()
                    except OSError as exc:
                        self._write_failed(exc, f)
                        f = None
                self._first.set()
                for event in asked:
                    event.set()
                # An extra sample (sample_now) leaves the periodic schedule where it was.
                now = time.perf_counter()
                while next_tick <= now:
                    next_tick += self.interval_s
                self._wake.wait(next_tick - now)
        finally:
            if f is not None:
                try:
                    f.close()
                except OSError as exc:
                    self._write_failed(exc, None)

    def _sample_once(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": time.perf_counter() - self._t0}
        try:
            read = self.reader.read()
            # A busy server answers late; its gauges describe the moment it answered, not when we asked.
            sample["t"] = time.perf_counter() - self._t0
            for values in read:  # several iterations in one answer: counters are cumulative, gauges peak
                for key, value in values.items():
                    sample[key] = max(sample.get(key, value), value) if key in _PEAK_KEYS else value
        except (urllib.error.URLError, OSError, ValueError) as exc:
            sample["scrape_error"] = str(exc)
        if self.gpu_available:
            try:
                sample["gpus"] = self.nvml.sample(self.gpu_indices)
            except Exception as exc:  # NVML errors are not fatal to a load test
                sample["gpu_error"] = str(exc)
        return sample

    def window_stats(self, start_s: float, end_s: float) -> dict[str, Any]:
        stats = window_stats(self.samples, start_s, end_s, self.kv_pool,
                             gpu_note=None if self.gpu_available else (self.nvml.reason or "no GPU visible"))
        stats["metrics_source"] = self.reader.source
        return stats


def _counter_delta(before: list[dict], inside: list[dict], key: str) -> float | None:
    values = [s[key] for s in before[-1:] + inside if key in s]
    return (values[-1] - values[0]) if len(values) >= 2 else (0.0 if values else None)


def _histogram_mean(before: list[dict], later: list[dict], name: str) -> float | None:
    """Mean of a server latency histogram over a window, in ms: delta sum / delta count between
    the last sample before it and the last sample in (or just after) it."""
    sums, counts = f"{name}_sum", f"{name}_count"
    first = next((s for s in reversed(before) if counts in s), None)
    last = next((s for s in reversed(later) if counts in s), None)
    if first is None or last is None:  # without a reading before the window, totals include earlier work
        return None
    n = last[counts] - (first[counts] if first else 0.0)
    total = last[sums] - (first[sums] if first else 0.0)
    return total / n * 1000.0 if n > 0 else None


def window_stats(
    samples: list[dict[str, Any]], start_s: float, end_s: float,
    kv_pool: dict[str, Any], gpu_note: str | None = None,
) -> dict[str, Any]:
    """Batching and memory facts over [start_s, end_s] of a sample series."""
    window = [s for s in samples if start_s <= s["t"] <= end_s]
    errors = [s["scrape_error"] for s in window if "scrape_error" in s]
    inside = [s for s in window if "scrape_error" not in s]
    before = [s for s in samples if s["t"] < start_s and "scrape_error" not in s]
    running = np.array([s["running"] for s in inside if "running" in s], dtype=float)
    waiting = np.array([s["waiting"] for s in inside if "waiting" in s], dtype=float)
    kv = np.array([s["kv_usage"] for s in inside if "kv_usage" in s], dtype=float)
    preemptions = _counter_delta(before, inside, "preemptions")
    kv_peak = float(kv.max()) if kv.size else None
    pool_bytes = kv_pool.get("bytes")
    preempted = bool(preemptions and preemptions > 0)

    mem_used = [sum(g["mem_used"] for g in s["gpus"]) for s in inside if s.get("gpus")]
    mem_total = next((sum(g["mem_total"] for g in s["gpus"]) for s in inside if s.get("gpus")), None)
    mem_peak = max(mem_used) if mem_used else None
    util = [np.mean([g["util_pct"] for g in s["gpus"]]) for s in inside if s.get("gpus")]
    power = [sum(g["power_w"] or 0 for g in s["gpus"]) for s in inside if s.get("gpus")]
    duration = end_s - start_s
    gen = _counter_delta(before, inside, "generation_tokens")
    hits = _counter_delta(before, inside, "prefix_hits")
    queries = _counter_delta(before, inside, "prefix_queries")

    after = [s for s in samples if s["t"] > end_s and "scrape_error" not in s]
    server_latency = {name: _histogram_mean(before, inside + after[:1], name)
                      for name in ("ttft", "itl", "tpot", "e2e")}
    e2e_counts = [smp["e2e_count"] for smp in (before[-1:] + inside + after[:1]) if "e2e_count" in smp]
    server_requests = (e2e_counts[-1] - e2e_counts[0]) if len(e2e_counts) >= 2 and before else None
    server_mem = [s["server_gpu_mem_bytes"] for s in inside if "server_gpu_mem_bytes" in s]

    oom_margin = None
    if kv_peak is not None:
        oom_margin = 0.0 if preempted else (1.0 - kv_peak) * 100.0
    return {
        "samples": len(inside),
        "running_batch_mean": float(running.mean()) if running.size else None,
        "running_batch_peak": float(running.max()) if running.size else None,
        "waiting_peak": float(waiting.max()) if waiting.size else None,
        "preemptions": preemptions,
        "preempted": preempted,
        "kv_cache_peak_frac": kv_peak,
        "kv_cache_peak_bytes": kv_peak * pool_bytes if kv_peak is not None and pool_bytes else None,
        "kv_pool_tokens": kv_pool.get("tokens"),
        "kv_pool_bytes": pool_bytes,
        "oom_margin_pct": oom_margin,
        "device_mem_peak_bytes": mem_peak,
        # What the server itself reports using (TensorRT-LLM's gpuMemUsage); None elsewhere.
        "server_gpu_mem_peak_bytes": max(server_mem) if server_mem else None,
        "device_mem_total_bytes": mem_total,
        "device_headroom_pct": (1.0 - mem_peak / mem_total) * 100.0 if mem_peak and mem_total else None,
        "gpu_util_mean_pct": float(np.mean(util)) if util else None,
        "gpu_power_mean_w": float(np.mean(power)) if power else None,
        "gpu": "available" if gpu_note is None else f"not available ({gpu_note})",
        "server_generation_tokens": gen,
        "server_generation_throughput": gen / duration if gen is not None and duration > 0 else None,
        "prefix_cache_hit_rate": (hits / queries) if hits is not None and queries else None,
        "server_latency_mean_ms": server_latency,
        "server_requests_finished": server_requests,
        "scrape_errors": len(errors),
        "scrape_error": (f"{len(errors)} of {len(window)} metric reads failed in this window; last: {errors[-1]}"
                         if errors else None),
    }
