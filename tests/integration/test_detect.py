"""Attach mode: which metrics a running server exposes (servesweep.backends.detect)."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servesweep.backends.detect import detect_metrics
from servesweep.backends.process import free_port
from servesweep.backends.telemetry import PrometheusReader
from servesweep.backends.trtllm_metrics import TrtllmMetricsReader
from servesweep.testing import fake_trtllm_serve

VLLM_TEXT = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""
SGLANG_TEXT = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 7.0
sglang:num_queue_reqs{model_name="m"} 2.0
sglang:token_usage{model_name="m"} 0.4
sglang:num_retracted_reqs{model_name="m",pid="1"} 1.0
sglang:num_retracted_requests_total{model_name="m"} 5.0
sglang:generation_tokens_total{model_name="m"} 100.0
sglang:inter_token_latency_seconds_sum{model_name="m"} 0.5
sglang:inter_token_latency_seconds_count{model_name="m"} 50.0
"""
TRTLLM_PROM_TEXT = """trtllm_num_requests_running{model_name="undefined",engine_type="undefined"} 4.0
trtllm_kv_cache_utilization{model_name="undefined",engine_type="undefined"} 0.5
trtllm_time_to_first_token_seconds_count{model_name="undefined",engine_type="undefined"} 2.0
trtllm_time_to_first_token_seconds_sum{model_name="undefined",engine_type="undefined"} 0.1
"""


@pytest.fixture
def http_server():
    """A tiny server answering fixed bodies per path (404 elsewhere)."""
    started = []

    def start(routes: dict[str, str]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write((body or "").encode())

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stand_in(tmp_path):
    """The stand-in trtllm-serve with iteration stats and /prometheus/metrics on."""
    procs = []

    def start(**env) -> str:
        options = tmp_path / "o.yaml"
        options.write_text("enable_iter_perf_stats: true\nreturn_perf_metrics: true\n")
        port = free_port()
        proc = subprocess.Popen([sys.executable, fake_trtllm_serve.__file__, "m", "--host", "127.0.0.1", "--port",
                                 str(port), "--config", str(options)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ, FAKE_TRTLLM_START_DELAY="0", **env))
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                return url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("stand-in did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def generate(url: str, n: int = 3) -> None:
    for _ in range(n):
        req = urllib.request.Request(url + "/v1/completions", method="POST",
                                     data=json.dumps({"prompt": "hello", "max_tokens": 4}).encode())
        urllib.request.urlopen(req).read()


def test_vllm_prometheus(http_server):
    url = http_server({"/metrics": VLLM_TEXT})
    reader, what = detect_metrics(url)
    assert isinstance(reader, PrometheusReader) and what.startswith("vLLM Prometheus metrics")
    assert reader.read() == [{"running": 3.0, "waiting": 1.0, "kv_usage": 0.25}]


def test_sglang_prometheus(http_server):
    url = http_server({"/metrics": SGLANG_TEXT})
    reader, what = detect_metrics(url)
    assert what.startswith("SGLang Prometheus metrics")
    # The cumulative retraction counter, not the instantaneous num_retracted_reqs gauge.
    assert reader.read() == [{"running": 7.0, "waiting": 2.0, "kv_usage": 0.4, "preemptions": 5.0,
                              "generation_tokens": 100.0, "itl_sum": 0.5, "itl_count": 50.0}]


def test_trtllm_prometheus_only(http_server):
    url = http_server({"/prometheus/metrics": TRTLLM_PROM_TEXT})
    reader, what = detect_metrics(url)
    assert what.startswith("TensorRT-LLM Prometheus metrics at") and reader.url.endswith("/prometheus/metrics")
    assert reader.read()[0]["running"] == 4.0


def test_json_endpoint_missing_falls_back_to_prometheus(http_server):
    reader = TrtllmMetricsReader(http_server({"/prometheus/metrics": TRTLLM_PROM_TEXT}), prometheus=True)
    try:
        for _ in range(2):  # the 404 is taken once; later reads go to Prometheus alone
            assert reader.read() == [{"running": 4.0, "kv_usage": 0.5, "ttft_sum": 0.1, "ttft_count": 2.0}]
        assert reader.source.startswith("Prometheus") and "no JSON iteration stats" in reader.source
    finally:
        reader.close()


def test_nothing_found(http_server, stub_server):
    reader, what = detect_metrics(stub_server().url)  # an OpenAI-compatible server without metrics
    assert reader is None and "HTTP 404" in what
    reader, what = detect_metrics(http_server({"/metrics": "some_other_metric 1.0\n"}))
    assert reader is None and "no vLLM, SGLang or TensorRT-LLM metric names" in what
    reader, what = detect_metrics(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    assert reader is None and "unreachable" in what


def test_trtllm_iteration_stats(stand_in):
    url = stand_in()
    generate(url)
    reader, what = detect_metrics(url)
    try:
        assert isinstance(reader, TrtllmMetricsReader) and reader.prometheus is not None
        assert "TensorRT-LLM iteration statistics" in what and "this probe consumed" in what
        # One poller: while this reader lives, a second detection does not read the queue.
        again, why = detect_metrics(url)
        assert again is None and "already read" in why
        generate(url, 1)
        time.sleep(0.05)
        samples = reader.read()
        assert any(s.get("running") == 1 for s in samples) and samples[-1]["ttft_count"] == 4
    finally:
        reader.close()
    assert detect_metrics(url)[0].close() is None


def test_trtllm_without_json_iteration_stats(stand_in):
    url = stand_in(FAKE_TRTLLM_JSON_METRICS="0")  # a release whose own collector drains the queue
    reader, what = detect_metrics(url)
    try:
        assert "with iteration gauges" in what
        generate(url, 1)
        sample = {k: v for s in reader.read() for k, v in s.items()}
        assert "running" in sample and sample["ttft_count"] == 1
    finally:
        reader.close()
