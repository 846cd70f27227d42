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
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from servesweep.backends.gpu import Nvml

# name -> key in a sample; older vLLM releases called the KV gauge gpu_cache_usage_perc
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
}
COUNTERS = {
    "vllm:num_preemptions": "preemptions",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:prefix_cache_hits": "prefix_hits",
    "vllm:prefix_cache_queries": "prefix_queries",
}
_WANTED_PREFIXES = tuple(
    [name + "{" for name in GAUGES] + [name + " " for name in GAUGES]
    + [name + "_total" for name in COUNTERS]
)


def fetch_metrics_text(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read().decode("utf-8", errors="replace")


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """The gauges and counters servesweep uses, summed over engines (KV usage: the max)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(_WANTED_PREFIXES)]
    sample: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for s in family.samples:
            name = s.name[:-6] if s.name.endswith("_total") else s.name
            key = GAUGES.get(name) or COUNTERS.get(name)
            if key is None:
                continue
            if key == "kv_usage":
                sample[key] = max(sample.get(key, 0.0), s.value)
            else:
                sample[key] = sample.get(key, 0.0) + s.value
    return sample


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


class TelemetrySampler:
    def __init__(
        self,
        base_url: str,
        out_path: Path,
        interval_s: float = 0.25,
        kv_pool: dict[str, Any] | None = None,
        gpu_indices: list[int] | None = None,
    ) -> None:
        self.metrics_url = base_url.rstrip("/") + "/metrics"
        self.out_path = out_path
        self.interval_s = interval_s
        self.kv_pool = kv_pool or {"tokens": None, "bytes": None}
        self.nvml = Nvml()
        self.gpu_indices = gpu_indices if gpu_indices is not None else self.nvml.visible_indices()
        self.samples: list[dict[str, Any]] = []
        self.scrape_errors = 0
        self.last_scrape_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def gpu_available(self) -> bool:
        return self.nvml.available and bool(self.gpu_indices)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="servesweep-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as f:
            next_tick = time.perf_counter()
            while not self._stop.is_set():
                sample = self._sample_once()
                self.samples.append(sample)
                f.write(orjson.dumps(sample) + b"\n")
                f.flush()
                next_tick += self.interval_s
                self._stop.wait(max(next_tick - time.perf_counter(), 0.0))

    def _sample_once(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": time.perf_counter() - self._t0}
        try:
            text = fetch_metrics_text(self.metrics_url)
            # A busy server answers late; its gauges describe the moment it answered, not when we asked.
            sample["t"] = time.perf_counter() - self._t0
            sample.update(parse_vllm_metrics(text))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.scrape_errors += 1
            self.last_scrape_error = str(exc)
            sample["scrape_error"] = str(exc)
        if self.gpu_available:
            try:
                sample["gpus"] = self.nvml.sample(self.gpu_indices)
            except Exception as exc:  # NVML errors are not fatal to a load test
                sample["gpu_error"] = str(exc)
        return sample

    def window_stats(self, start_s: float, end_s: float) -> dict[str, Any]:
        return window_stats(self.samples, start_s, end_s, self.kv_pool,
                            gpu_note=None if self.gpu_available else (self.nvml.reason or "no GPU visible"))


def _counter_delta(before: list[dict], inside: list[dict], key: str) -> float | None:
    values = [s[key] for s in before[-1:] + inside if key in s]
    return (values[-1] - values[0]) if len(values) >= 2 else (0.0 if values else None)


def window_stats(
    samples: list[dict[str, Any]], start_s: float, end_s: float,
    kv_pool: dict[str, Any], gpu_note: str | None = None,
) -> dict[str, Any]:
    """Batching and memory facts over [start_s, end_s] of a sample series."""
    inside = [s for s in samples if start_s <= s["t"] <= end_s and "scrape_error" not in s]
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
        "device_mem_total_bytes": mem_total,
        "device_headroom_pct": (1.0 - mem_peak / mem_total) * 100.0 if mem_peak and mem_total else None,
        "gpu_util_mean_pct": float(np.mean(util)) if util else None,
        "gpu_power_mean_w": float(np.mean(power)) if power else None,
        "gpu": "available" if gpu_note is None else f"not available ({gpu_note})",
        "server_generation_tokens": gen,
        "server_generation_throughput": gen / duration if gen is not None and duration > 0 else None,
        "prefix_cache_hit_rate": (hits / queries) if hits is not None and queries else None,
    }
