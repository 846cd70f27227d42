"""End to end against the real CPU vLLM server (one server for the whole session)."""

import json

import pytest

from servesweep.errors import ConfigError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import read_records
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test

pytestmark = pytest.mark.vllm


def config(server, out, levels, **workload):
    return LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=out, levels=levels,
                          show_progress=False, workload=Workload(**({"input_len": 64, "output_len": 16} | workload)))


@pytest.mark.parametrize("endpoint,stream", [("completions", True), ("completions", False),
                                             ("chat", True), ("chat", False)])
async def test_endpoints_with_pinned_output_lengths(vllm_server, tmp_path, endpoint, stream):
    levels = [LoadLevel(concurrency=1, num_requests=4), LoadLevel(concurrency=16, num_requests=32)]
    summary = await run_load_test(config(vllm_server, tmp_path, levels, endpoint=endpoint, stream=stream,
                                         input_len="uniform:16:128", output_len="uniform:4:24"))
    assert summary["completed"] == 36 and summary["failed"] == 0
    records = list(read_records(tmp_path / "records.jsonl"))
    # max_tokens + ignore_eos pin every output length, as the server's usage reports it.
    assert all(r.completion_tokens == r.output_len_requested for r in records)
    assert summary["output_len_mismatch"] == 0
    if endpoint == "completions":
        # Prompts were built to an exact token count with the model's own tokenizer.
        assert all(r.prompt_tokens == r.prompt_len_requested for r in records)
    if stream:
        assert all(len(r.chunk_arrivals_s) >= 1 for r in records)
        assert summary["itl_ms"]["count"] > 0
        # Equal when the whole answer came in one read (each read is stamped once, on arrival).
        assert all(0 < r.ttft_ms <= r.e2e_ms for r in records)


async def test_lengths_past_the_context_are_refused_before_any_load(vllm_server, tmp_path):
    # The server's /v1/models says max_model_len 1024: the run is refused (exit 2) before a prompt is built.
    with pytest.raises(ConfigError, match=r"1,516 tokens per request.*context of 1,024 tokens.*max_model_len"):
        await run_load_test(config(vllm_server, tmp_path, [LoadLevel(concurrency=2, num_requests=2)],
                                   input_len=1500))
    assert not (tmp_path / "records.jsonl").exists()


async def test_prompt_longer_than_context_is_recorded_with_the_servers_message(vllm_server, tmp_path):
    # A dataset prompt that alone does not fit the context is sent as is: the server's refusal is recorded.
    dataset = tmp_path / "long.jsonl"
    dataset.write_text(json.dumps({"prompt": " ".join(f"w{i}" for i in range(1500)), "output_len": 16}) + "\n")
    summary = await run_load_test(config(vllm_server, tmp_path / "out", [LoadLevel(concurrency=2, num_requests=2)],
                                         dataset=dataset))
    assert summary["completed"] == 0 and summary["errors"] == {"http_error": 2}
    message = summary["error_examples"]["http_error"]
    assert "1024" in message  # the server names its context length
    records = list(read_records(tmp_path / "out" / "records.jsonl"))
    assert all(r.http_status == 400 and r.prompt_len_requested > 1024 for r in records)


async def test_telemetry_tracks_batching_and_kv_cache(vllm_server, tmp_path):
    # Enough requests at c16 that ramp-up and drain are a small part of the window, and varied output
    # lengths so requests do not finish in lock-step waves (the batch dips between waves).
    levels = [LoadLevel(concurrency=1, num_requests=6), LoadLevel(concurrency=16, num_requests=192)]
    telemetry = vllm_server.telemetry(tmp_path / "telemetry.jsonl", interval_s=0.1)
    summary = await run_load_test(config(vllm_server, tmp_path, levels, input_len=256, output_len="uniform:24:72"),
                                  telemetry=telemetry, server_info=vllm_server.info(), telemetry_tail_s=1.5)
    c1, c16 = (lv["telemetry"] for lv in summary["levels"])
    # The server's running batch follows the client's concurrency.
    assert c1["running_batch_peak"] <= 1
    assert c16["running_batch_peak"] >= 8
    assert c16["running_batch_mean"] > 3 * max(c1["running_batch_mean"], 1)
    # KV cache fills under load, and the pool size comes from the server.
    assert c16["kv_cache_peak_frac"] > 0
    assert c16["kv_cache_peak_frac"] > c1["kv_cache_peak_frac"]
    assert summary["server"]["kv_pool_tokens"] > 0 and summary["server"]["kv_pool_bytes"] > 0
    assert c16["kv_cache_peak_bytes"] == pytest.approx(c16["kv_cache_peak_frac"] * summary["server"]["kv_pool_bytes"])
    assert 0 < c16["oom_margin_pct"] <= 100
    assert c16["device_mem_peak_bytes"] is None and c16["gpu"].startswith("not available")
    for key in ("running_batch_mean", "running_batch_peak", "waiting_peak", "kv_cache_peak_frac",
                "kv_cache_peak_bytes", "preemptions", "device_mem_peak_bytes", "oom_margin_pct"):
        assert key in summary["telemetry"]
    # ...and falls back once the load stops.
    samples = [json.loads(line) for line in (tmp_path / "telemetry.jsonl").read_text().splitlines()]
    after = [s for s in samples if s["t"] > summary["levels"][-1]["end_s"] + 0.5 and "kv_usage" in s]
    assert after, "no telemetry samples after the load"
    assert after[-1]["kv_usage"] == 0 and after[-1]["running"] == 0
    # Server-side generation counters agree with what the client counted.
    assert c16["server_generation_tokens"] == pytest.approx(summary["levels"][1]["total_output_tokens"], rel=0.1)


def test_attached_run_samples_the_servers_metrics(vllm_server, tmp_path):
    # `servesweep run --url` against a server servesweep did not launch: telemetry is detected and sampled.
    from servesweep.cli import main

    out = tmp_path / "attach"
    assert main(["run", "--url", vllm_server.base_url, "--concurrency", "1,8", "--num-requests", "24",
                 "--input-len", "64", "--output-len", "uniform:16:48", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "telemetry.jsonl").stat().st_size > 0
    c1, c8 = (lv["telemetry"] for lv in summary["levels"])
    assert c8["running_batch_peak"] >= 2 and c8["kv_cache_peak_frac"] > 0
    assert c8["metrics_source"].startswith("Prometheus")
    # vLLM publishes its KV pool in cache_config_info, so the bytes are known in attach mode too.
    assert c8["kv_cache_peak_bytes"] is None or c8["kv_cache_peak_bytes"] > 0


async def test_timings_agree_with_the_servers_own_histograms(vllm_server, tmp_path):
    """The demo's bug: with the client descheduled, TPOT read 0.1 ms and ITL p50 0.0. With the CPU
    split (server on its cores, client on its own) and kernel receive stamps, the client's decode
    timings match the server's histograms."""
    levels = [LoadLevel(concurrency=1, num_requests=12, warmup_requests=2),
              LoadLevel(concurrency=8, num_requests=48, warmup_requests=8)]
    telemetry = vllm_server.telemetry(tmp_path / "telemetry.jsonl")
    summary = await run_load_test(config(vllm_server, tmp_path, levels, input_len="uniform:64:256",
                                         output_len="uniform:32:96"),
                                  telemetry=telemetry, server_info=vllm_server.info())
    assert summary["cpu_split"]["client_cpus"] and summary["arrival_clock"].startswith("kernel")
    c1 = summary["levels"][0]
    check = c1["timing_check"]
    server_itl = check["server_mean_ms"]["itl"]
    assert c1["itl_ms"]["p50"] > 0
    assert c1["tpot_ms"]["p50"] == pytest.approx(server_itl, rel=0.2)
    assert check["client_mean_ms"]["e2e"] == pytest.approx(check["server_mean_ms"]["e2e"], rel=0.1, abs=2.0)
    assert check["ttft_offset_ms"] > -2.0


def test_locust_headless_against_the_real_server(vllm_server, tmp_path):
    """`servesweep locust` against the CPU vLLM: TTFT and TPOT entries in Locust's statistics, and a
    summary whose request count is Locust's."""
    import csv

    from servesweep.cli import main

    out = tmp_path / "locust"
    assert main(["locust", "--url", vllm_server.base_url, "--headless", "--users", "4", "--spawn-rate", "4",
                 "--run-time", "8s", "--out", str(out), "--input-len", "64", "--output-len", "24"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "locust_stats.csv") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    assert {"TTFT", "TPOT"} <= set(stats)
    # The CSV is Locust's once-a-second snapshot; its final counts are in the summary's `locust` section.
    entries = summary["locust"]["entries"]
    assert summary["completed"] > 0
    assert entries["POST /v1/completions"]["requests"] == summary["completed"] + summary["failed"]
    assert entries["LLM TTFT"]["requests"] == summary["completed"]
    assert summary["tpot_ms"]["p50"] > 0.5 and summary["itl_ms"]["p50"] > 0


def _server_means(server) -> dict[str, tuple[float, float]]:
    """(sum, count) of the server's own TTFT and inter-token latency histograms, seconds."""
    from servesweep.backends.telemetry import PrometheusReader
    from servesweep.backends.vllm import METRICS

    (sample,) = PrometheusReader(f"{server.base_url}/metrics", METRICS).read()
    return {name: (sample[f"{name}_sum"], sample[f"{name}_count"]) for name in ("ttft", "itl")}


def _window_means_ms(before: dict, after: dict) -> dict[str, float]:
    """The server's mean TTFT and inter-token latency over one tool's window, ms."""
    return {name: 1000.0 * (after[name][0] - before[name][0]) / (after[name][1] - before[name][1])
            for name in before}


async def test_ttft_and_tpot_agree_with_vllm_bench_serve_on_textless_tokens(vllm_server, tmp_path):
    """The H200 bug (issue 21): on a model whose tokenizer does not cover its vocabulary most tokens
    stream with empty text; TTFT timed at the first visible text read 1.8-2.7x `vllm bench serve`'s.
    Both tools, one after the other, on the same server and the same client core. Each figure is
    taken per unit of the server's speed in that tool's window: the server's own mean inter-token
    latency, from its /metrics histogram read before and after the window, so a machine whose speed
    changes between the two runs (other work on its cores) moves both sides of each ratio and not
    the comparison. The two tools' TTFT p50 per server unit must agree within 15 % and their mean
    TPOT per server unit within 10 %, with no absolute allowance (issue 36: 5 ms let anything from
    ~0 to ~10 ms pass). TTFT is divided by the inter-token mean (hundreds of gaps) rather than by
    the server's TTFT mean (ten requests, warm-ups included: one run moved it 11 % between windows
    whose raw TTFT p50 agreed within 2 %). Raw TTFT was compared until 2026-12-07, when one run read
    48.3 vs 40.3 ms while the server's inter-token mean moved from 31.1 to 24.6 ms between the two
    windows. 128 output tokens a request, so each TPOT is a mean over 127 gaps (docs/figures.md:
    what this can and cannot catch)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    # 8 requests a tool (16 until issue 33's CI time: at c1 this server decodes ~25-31 ms a token, so
    # each request is ~4 s); TTFT p50 is the median of 8, TPOT a mean over 8 x 127 gaps.
    n, warmup, input_len, output_len = 8, 2, 128, 128
    before = _server_means(vllm_server)
    summary = await run_load_test(
        config(vllm_server, tmp_path / "servesweep", [LoadLevel(concurrency=1, num_requests=n, warmup_requests=warmup)],
               input_len=input_len, output_len=output_len),
        server_info=vllm_server.info())
    server_ours = _window_means_ms(before, _server_means(vllm_server))
    assert summary["completed"] == n
    # Nearly every token came without text; the first visible text lies far behind the first token.
    assert summary["tokens_without_text_fraction"] > 0.8
    assert summary["token_timing"] == {"usage_per_chunk": n}
    ours = {"ttft": summary["ttft_ms"]["p50"], "tpot": summary["tpot_ms"]["mean"]}
    assert summary["first_text_ms"]["p50"] > ours["ttft"] + 5 * summary["tpot_ms"]["p50"]

    split = vllm_server.info().get("cpu_split")
    cpus = split["client_cpus"] if split else None
    driver = Path(__file__).resolve().parents[2] / "bench" / "drivers" / "vllm_bench.py"
    out = tmp_path / "vllm-bench"
    cmd = [sys.executable, str(driver), "--backend", "openai", "--base-url", vllm_server.base_url,
           "--endpoint", "/v1/completions", "--model", vllm_server.model_name,
           "--tokenizer", str(vllm_server.config.model),
           "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
           "--num-prompts", str(n), "--max-concurrency", "1", "--request-rate", "inf", "--ignore-eos",
           "--disable-tqdm", "--num-warmups", str(warmup), "--save-result", "--result-dir", str(out),
           "--result-filename", "result.json"]
    before = _server_means(vllm_server)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    server_theirs = _window_means_ms(before, _server_means(vllm_server))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    theirs = {"ttft": result["median_ttft_ms"], "tpot": result["mean_tpot_ms"]}
    per_server = {tool: {"ttft": figures["ttft"] / server["itl"], "tpot": figures["tpot"] / server["itl"]}
                  for tool, figures, server in (("servesweep", ours, server_ours), ("vllm bench", theirs, server_theirs))}
    print(f"TTFT p50 / TPOT mean ms: servesweep {ours}, vllm bench serve {theirs}; server TTFT / inter-token "
          f"means {server_ours} / {server_theirs}; per server inter-token mean {per_server}")  # shown with -rA
    assert per_server["servesweep"]["ttft"] == pytest.approx(per_server["vllm bench"]["ttft"], rel=0.15), per_server
    assert per_server["servesweep"]["tpot"] == pytest.approx(per_server["vllm bench"]["tpot"], rel=0.10), per_server
