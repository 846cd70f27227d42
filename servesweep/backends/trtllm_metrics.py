"""TensorRT-LLM's server metrics, read into servesweep's neutral samples.

trtllm-serve has two metrics endpoints:

  - `/metrics`: a JSON list of *iteration statistics*, one dict per engine iteration, taken
    from a server-side queue that every GET empties (TensorRT-LLM's `get_stats_async`; in
    releases with a background collector, from a buffer that every GET empties). Iterations
    read by one client are gone for every other client, so exactly one poller may read it:
    `TrtllmIterStatsReader` claims the URL for the life of the reader (`close()` releases it;
    `TelemetrySampler.stop()` closes its reader), and a second reader of the same URL in this
    process raises ConfigError. It needs `enable_iter_perf_stats: true` (PyTorch backend; the
    TensorRT-engine backend always collects them); otherwise the list stays empty.
  - `/prometheus/metrics`: Prometheus text with `trtllm_*` names, mounted only with
    `return_perf_metrics: true`. Request latency histograms (TTFT, TPOT, e2e) since the 1.x
    releases; recent releases add iteration gauges (`trtllm_num_requests_running`,
    `trtllm_kv_cache_utilization`, ...) fed by the same iteration statistics.

Every iteration of an answer becomes one sample, so the sampler's peak over one read is the
peak over every iteration since the previous read, not over whichever iteration came last.

Iteration-statistics fields used (TensorRT-LLM `IterationStats` as JSON):

    numActiveRequests                       -> running
    numQueuedRequests                       -> waiting
    kvCacheStats.usedNumBlocks/maxNumBlocks -> kv_usage (0-1)
    kvCacheStats.maxNumBlocks x tokensPerBlock -> the KV pool in tokens (`on_pool`)
    kvCacheStats.reusedBlocks, missedBlocks -> prefix_hits, prefix_queries (cumulative, in blocks)
    gpuMemUsage                             -> server_gpu_mem_bytes (what the engine reports)
    inflightBatchingStats.numPausedRequests -> preemptions: a counter this reader accumulates, the
        number of paused request-iterations seen (a request paused for 3 iterations counts 3). It
        grows only when the scheduler pauses running requests to free KV blocks; under the default
        GUARANTEED_NO_EVICT capacity policy it stays 0 even when the pool is full, because new
        requests wait in the queue instead (see `PREEMPTION_SEMANTICS`).
    one per iteration                       -> iterations (cumulative)

Counters are cumulative over the reader's life; a gap in them (iterations dropped because the
server's queue, `iter_stats_max_iterations` long, overflowed between two reads) is not seen.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import weakref
from typing import Any, Callable

import orjson

from servesweep import controlplane
from servesweep.backends.telemetry import PrometheusMetrics, PrometheusReader
from servesweep.errors import ConfigError

# Prometheus names of trtllm-serve's /prometheus/metrics (tensorrt_llm/metrics/collector.py).
# TPOT is a per-request mean, not an inter-token gap: it gets its own key, never "itl".
PROMETHEUS = PrometheusMetrics(
    gauges={
        "trtllm_num_requests_running": "running",
        "trtllm_num_requests_waiting": "waiting",
        "trtllm_kv_cache_utilization": "kv_usage",
        "trtllm_gpu_memory_usage_bytes": "server_gpu_mem_bytes",
        "trtllm_num_paused_requests": "paused_requests",
    },
    counters={
        "trtllm_prompt_tokens": "prompt_tokens",
        "trtllm_generation_tokens": "generation_tokens",
    },
    histograms={
        "trtllm_time_to_first_token_seconds": "ttft",
        "trtllm_time_per_output_token_seconds": "tpot",
        "trtllm_e2e_request_latency_seconds": "e2e",
    },
    max_keys=frozenset({"kv_usage"}),
)
GAUGE_KEYS = frozenset({"running", "waiting", "kv_usage", "server_gpu_mem_bytes", "paused_requests"})

PREEMPTION_SEMANTICS = {
    "GUARANTEED_NO_EVICT": (
        "TensorRT-LLM's default capacity policy admits a request only when its KV blocks for the "
        "whole generation are guaranteed, so running requests are never paused: preemptions stay 0 "
        "even when the KV pool is full. 0 here does not mean 'no memory pressure'; look at "
        "waiting_peak and kv_cache_peak_frac."),
    "MAX_UTILIZATION": (
        "preemptions counts paused request-iterations (inflightBatchingStats.numPausedRequests summed "
        "over every iteration seen): above 0 the scheduler ran out of KV blocks and paused running "
        "requests."),
    "STATIC_BATCH": "static batching never pauses requests: preemptions stays 0.",
}

# One live reader per JSON /metrics URL in this process.
_CLAIMS: dict[str, weakref.ref] = {}
_CLAIMS_LOCK = threading.Lock()


def _claim(url: str, owner: object) -> None:
    with _CLAIMS_LOCK:
        holder = _CLAIMS.get(url)
        if holder is not None and holder() is not None:
            raise ConfigError(
                f"TensorRT-LLM's {url} already has a reader in this process; every read empties the "
                f"server's iteration queue, so a second reader would take iterations from the first. "
                f"Stop the first telemetry sampler (or close() its reader) before creating another")
        _CLAIMS[url] = weakref.ref(owner)


def _release(url: str, owner: object) -> None:
    with _CLAIMS_LOCK:
        holder = _CLAIMS.get(url)
        if holder is not None and holder() in (owner, None):
            del _CLAIMS[url]


def is_claimed(url: str) -> bool:
    """Whether a live reader in this process owns this JSON /metrics URL."""
    with _CLAIMS_LOCK:
        holder = _CLAIMS.get(url)
        return holder is not None and holder() is not None


def fetch_iteration_stats(url: str, timeout_s: float = 2.0) -> list[dict[str, Any]]:
    """One GET of the JSON endpoint (which empties the server's queue). Raises OSError for an
    unreachable or failing endpoint and ValueError for an answer that is not a JSON list."""
    with controlplane.urlopen(url, timeout=timeout_s) as resp:
        body = resp.read()
    data = orjson.loads(body)
    if not isinstance(data, list):
        raise ValueError(f"{url} answered {type(data).__name__}, not a JSON list of iteration statistics")
    return [d for d in data if isinstance(d, dict)]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class TrtllmIterStatsReader:
    """Reads trtllm-serve's JSON `/metrics` into one neutral sample per iteration.

    `on_pool(max_blocks, tokens_per_block)` is called with the KV pool's size as soon as an
    iteration reports it (the pool is fixed once the server runs, so the first report is kept).
    """

    def __init__(self, url: str, timeout_s: float = 2.0,
                 on_pool: Callable[[int, int], None] | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.on_pool = on_pool
        self.source = f"TensorRT-LLM iteration stats {url} (JSON; emptied on every read)"
        self.iterations = 0
        self.paused_request_iterations = 0
        self.pool: tuple[int, int] | None = None
        self._closed = False
        _claim(url, self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.url, self)

    def __del__(self) -> None:  # a reader dropped without close() must not hold the URL
        try:
            self.close()
        except Exception:
            pass

    def read(self) -> list[dict[str, float]]:
        if self._closed:
            raise ValueError(f"reader of {self.url} was closed")
        return self.parse(fetch_iteration_stats(self.url, self.timeout_s))

    def parse(self, iterations: list[dict[str, Any]]) -> list[dict[str, float]]:
        """Neutral samples for one answer's iterations, oldest first; counters carry on from
        earlier answers. An empty answer gives one sample with the counters only."""
        samples = [self._sample(it) for it in iterations]
        return samples or [self._counters()]

    def _counters(self) -> dict[str, float]:
        return {"iterations": float(self.iterations), "preemptions": float(self.paused_request_iterations)}

    def _sample(self, it: dict[str, Any]) -> dict[str, float]:
        self.iterations += 1
        ifb = it.get("inflightBatchingStats") or {}
        paused = _num(ifb.get("numPausedRequests"))
        if paused:
            self.paused_request_iterations += int(paused)
        sample = self._counters()
        for key, field in (("running", "numActiveRequests"), ("waiting", "numQueuedRequests"),
                           ("server_gpu_mem_bytes", "gpuMemUsage"), ("iter_latency_ms", "iterLatencyMS")):
            value = _num(it.get(field))
            if value is not None:
                sample[key] = value
        kv = it.get("kvCacheStats") or {}
        used, total, per_block = _num(kv.get("usedNumBlocks")), _num(kv.get("maxNumBlocks")), _num(kv.get("tokensPerBlock"))
        if used is not None and total:
            sample["kv_usage"] = used / total
        if total and per_block and self.pool is None:
            self.pool = (int(total), int(per_block))
            if self.on_pool is not None:
                self.on_pool(*self.pool)
        reused, missed = _num(kv.get("reusedBlocks")), _num(kv.get("missedBlocks"))
        if reused is not None and missed is not None:
            sample["prefix_hits"] = reused
            sample["prefix_queries"] = reused + missed
        return sample


class TrtllmMetricsReader:
    """The JSON iteration statistics, plus `/prometheus/metrics` where the server mounts it.

    Prometheus adds the request latency histograms and token counters the iteration statistics
    lack. Its gauges stand in for the JSON ones only in a read that brought no iteration (the
    JSON list is empty when iteration statistics are off, when no iteration finished since the
    last read, or in releases whose own collector drains the queue first).
    """

    def __init__(self, base_url: str, prometheus: bool, timeout_s: float = 2.0,
                 on_pool: Callable[[int, int], None] | None = None) -> None:
        base = base_url.rstrip("/")
        self.iter_stats = TrtllmIterStatsReader(base + "/metrics", timeout_s, on_pool)
        self.prometheus = PrometheusReader(base + "/prometheus/metrics", PROMETHEUS, timeout_s) if prometheus else None
        self.source = self.iter_stats.source + (f" + {self.prometheus.source}" if self.prometheus else "")
        self.prometheus_errors = 0
        self.json_missing = False

    def close(self) -> None:
        self.iter_stats.close()

    def read(self) -> list[dict[str, float]]:
        if self.json_missing:
            samples = []
        else:
            try:
                samples = self.iter_stats.read()
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or self.prometheus is None:
                    raise
                self.json_missing = True  # no JSON endpoint here: Prometheus alone from now on
                self.source = f"{self.prometheus.source} (no JSON iteration stats at {self.iter_stats.url})"
                samples = []
        if self.prometheus is None:
            return samples
        try:
            extra = self.prometheus.read()[0]
        except (urllib.error.URLError, OSError, ValueError):
            # The iterations just read are gone from the server: keep them, count the miss.
            self.prometheus_errors += 1
            return [{**s, "prometheus_scrape_errors": float(self.prometheus_errors)} for s in samples]
        if any("running" in s for s in samples):
            extra = {k: v for k, v in extra.items() if k not in GAUGE_KEYS}
        return samples + [extra] if extra else samples


def prometheus_has_iteration_gauges(text: str) -> bool:
    return any(line.startswith(("trtllm_num_requests_running", "trtllm_kv_cache_utilization"))
               for line in text.splitlines())


def probe_prometheus(base_url: str, timeout_s: float = 2.0) -> str | None:
    """The text of `/prometheus/metrics` when it is mounted and holds trtllm_ names, else None."""
    url = base_url.rstrip("/") + "/prometheus/metrics"
    try:
        with controlplane.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return text if "trtllm_" in text else None
