"""Which metrics a running server exposes, for load tests of a server servesweep did not start.

`detect_metrics(base_url)` probes, in order:

  1. `/metrics` answering a JSON list: TensorRT-LLM's iteration statistics (trtllm-serve). Its
     queue empties on every read, so the probe itself consumes whatever iterations were queued
     (harmless before a run) and the reader it returns is the only one allowed on that URL.
     `/prometheus/metrics` is added where the server mounts it (latency histograms).
  2. `/metrics` in Prometheus text with vLLM's names (servesweep.backends.vllm.METRICS).
  3. `/metrics` with SGLang's names (its server needs `--enable-metrics`).
  4. `/prometheus/metrics` with TensorRT-LLM's `trtllm_*` names (JSON iteration stats absent).

SGLang's names mapped to the neutral keys (sglang/srt/metrics/collector.py):
`sglang:num_running_reqs` -> running, `sglang:num_queue_reqs` -> waiting, `sglang:token_usage`
(fraction of the KV token pool in use) -> kv_usage, `sglang:num_retracted_requests_total`
(requests SGLang retracted, its preemption; not the instantaneous `sglang:num_retracted_reqs`
gauge) -> preemptions, prompt/generation token counters, and the TTFT, inter-token (older
releases: time-per-output-token) and e2e latency histograms.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from servesweep import controlplane
from servesweep.backends.telemetry import MetricsReader, PrometheusMetrics, PrometheusReader
from servesweep.backends.trtllm_metrics import (
    PROMETHEUS as TRTLLM_PROMETHEUS,
    TrtllmMetricsReader,
    is_claimed,
    prometheus_has_iteration_gauges,
)
from servesweep.backends.vllm import METRICS as VLLM_METRICS

SGLANG_METRICS = PrometheusMetrics(
    gauges={
        "sglang:num_running_reqs": "running",
        "sglang:num_queue_reqs": "waiting",
        "sglang:token_usage": "kv_usage",
    },
    counters={
        "sglang:prompt_tokens": "prompt_tokens",
        "sglang:generation_tokens": "generation_tokens",
        "sglang:num_retracted_requests": "preemptions",
    },
    histograms={
        "sglang:time_to_first_token_seconds": "ttft",
        "sglang:inter_token_latency_seconds": "itl",
        "sglang:time_per_output_token_seconds": "tpot",
        "sglang:e2e_request_latency_seconds": "e2e",
    },
    max_keys=frozenset({"kv_usage"}),
)


def _get(url: str, timeout_s: float) -> tuple[int | None, str]:
    """(HTTP status, body) or (None, why it could not be read)."""
    try:
        with controlplane.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if controlplane.is_redirect(exc.code):
            return None, exc.msg  # not followed (servesweep.controlplane): says where it pointed
        return exc.code, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def _has_any(text: str, names: dict[str, str]) -> list[str]:
    found = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for name in names:
            if line.startswith((name + "{", name + " ")) and name not in found:
                found.append(name)
    return found


def _status(code: int | None, body: str) -> str:
    return f"HTTP {code}" if code is not None else f"unreachable ({body})"


def detect_metrics(base_url: str, timeout_s: float = 2.0) -> tuple[MetricsReader | None, str]:
    """A reader for what the server at `base_url` exposes, and one line saying what was found
    (or why nothing was). Reading nothing is not an error: the run goes on without telemetry."""
    base = base_url.rstrip("/")
    metrics_url = base + "/metrics"
    if is_claimed(metrics_url):
        return None, f"{metrics_url} is already read by a telemetry sampler in this process"
    code, body = _get(metrics_url, timeout_s)
    prom_code, prom_body = _get(base + "/prometheus/metrics", timeout_s)
    trtllm_prom = prom_code == 200 and "trtllm_" in prom_body
    if code == 200 and body.lstrip().startswith("["):
        reader = TrtllmMetricsReader(base, prometheus=trtllm_prom, timeout_s=timeout_s)
        queued = body.count('"numActiveRequests"')
        extra = ""
        if trtllm_prom:
            gauges = "with" if prometheus_has_iteration_gauges(prom_body) else "without"
            extra = f"; /prometheus/metrics too ({gauges} iteration gauges)"
        elif queued == 0:
            extra = ("; the list was empty (an idle server, or iteration statistics off: "
                     "enable_iter_perf_stats) and there is no /prometheus/metrics (return_perf_metrics)")
        return reader, (f"TensorRT-LLM iteration statistics at {metrics_url} (JSON, emptied on every read; "
                        f"this probe consumed {queued} queued iterations){extra}")
    if code == 200:
        for name, metrics in (("vLLM", VLLM_METRICS), ("SGLang", SGLANG_METRICS), ("TensorRT-LLM", TRTLLM_PROMETHEUS)):
            found = _has_any(body, metrics.gauges)
            if found:
                return (PrometheusReader(metrics_url, metrics, timeout_s),
                        f"{name} Prometheus metrics at {metrics_url} ({', '.join(found)})")
    if trtllm_prom:
        url = base + "/prometheus/metrics"
        gauges = _has_any(prom_body, TRTLLM_PROMETHEUS.gauges)
        return (PrometheusReader(url, TRTLLM_PROMETHEUS, timeout_s),
                f"TensorRT-LLM Prometheus metrics at {url} "
                + (f"({', '.join(gauges)})" if gauges else "(latency histograms only: no batch or KV gauges)"))
    why = "no vLLM, SGLang or TensorRT-LLM metric names in it" if code == 200 else _status(code, body)
    return None, (f"no server metrics found: {metrics_url}: {why}; "
                  f"{base}/prometheus/metrics: {_status(prom_code, prom_body)}")
