"""The TensorRT-LLM backend against its documented CLI, and end to end against the stand-in
`trtllm-serve` (servesweep/testing/fake_trtllm_serve.py), which enforces each release's flags and
options-file keys the way the real one does."""

import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from servesweep.backends import BACKENDS, config_from_dict
from servesweep.backends.telemetry import TelemetrySampler
from servesweep.backends.trtllm import (
    CliFeatures,
    TrtllmConfig,
    Version,
    build_argv,
    build_options,
    check_supported,
    classify_trtllm_log,
    detect_version,
    inspect_checkpoint,
    kv_budget_tokens,
    kv_bytes_per_token,
    kv_pool_from_log,
    launch_trtllm,
)
from servesweep.backends.trtllm_metrics import TrtllmIterStatsReader
from servesweep.errors import ConfigError, ServerStartError, UnsupportedConfig
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test
from servesweep.testing import fake_trtllm_serve

FAKE = Path(fake_trtllm_serve.__file__)
LLAMA_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "intermediate_size": 14336, "vocab_size": 128256}
TINY = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4}


def model_dir(root: Path, config: dict, **files: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    for name, content in files.items():
        (root / f"{name}.json").write_text(json.dumps(content))
    return root


def features(version: str | None) -> CliFeatures:
    return CliFeatures.for_version(Version.parse(version) if version else None)


# --- argv and options file ------------------------------------------------------------------

def test_argv_and_options_for_a_current_release(tmp_path):
    cfg = TrtllmConfig(model="/m/llama", max_batch_size=64, max_num_tokens=4096, max_model_len=8192,
                       tensor_parallel_size=2, memory_fraction=0.85, kv_cache_dtype="fp8", precision="fp16")
    f = features("1.2.0")
    assert build_argv(cfg, 8123, tmp_path / "o.yaml", f) == [
        "trtllm-serve", "/m/llama", "--backend", "pytorch", "--host", "127.0.0.1", "--port", "8123",
        "--max_batch_size", "64", "--max_num_tokens", "4096", "--max_seq_len", "8192",
        "--kv_cache_free_gpu_memory_fraction", "0.85", "--tp_size", "2", "--config", str(tmp_path / "o.yaml")]
    assert build_options(cfg, f, kv_tokens=1000) == {
        "enable_iter_perf_stats": True, "return_perf_metrics": True, "dtype": "float16",
        # The file's kv_cache_config replaces the command line's, so the fraction is repeated there.
        "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "max_tokens": 1000, "dtype": "fp8"}}


def test_argv_and_options_for_older_releases(tmp_path):
    cfg = TrtllmConfig(model="/m", kv_cache_dtype="fp8", capacity_scheduler_policy="MAX_UTILIZATION")
    for version in ("1.1.0", "1.2.0rc3", None):  # before the --config alias, and unknown
        assert build_argv(cfg, 1, tmp_path / "o.yaml", features(version))[-2] == "--extra_llm_api_options"
    old = features("0.21.0")
    assert build_argv(cfg, 1, tmp_path / "o.yaml", old)[2:4] == ["--backend", "pytorch"]
    assert build_options(cfg, old) == {
        "enable_iter_perf_stats": True, "dtype": "bfloat16", "kv_cache_dtype": "fp8",
        "scheduler_config": {"capacity_scheduler_policy": "MAX_UTILIZATION"}}
    engine = TrtllmConfig(model="/m", backend="tensorrt", kv_cache_dtype="fp8")
    assert "--backend" not in build_argv(engine, 1, tmp_path / "o.yaml", old)  # the default path before 1.0
    assert build_options(engine, features("1.2.0")) == {
        "return_perf_metrics": True, "dtype": "bfloat16", "quant_config": {"kv_cache_quant_algo": "FP8"}}
    with pytest.raises(UnsupportedConfig, match="older than 0.21.0rc0"):
        features("0.20.0")


@pytest.mark.parametrize("version", ["0.21.0", "1.0.0rc3", "1.0.0", "1.1.0", "1.2.0"])
@pytest.mark.parametrize("backend", ["pytorch", "tensorrt"])
def test_stand_in_accepts_what_servesweep_writes(tmp_path, version, backend):
    """The stand-in refuses unknown flags and options-file keys release by release, like the real
    CLI; here it must get past them to the (injected) start-up failure."""
    cfg = TrtllmConfig(model=str(model_dir(tmp_path / "m", TINY)), backend=backend, kv_cache_dtype="fp8",
                       memory_fraction=0.5, max_batch_size=8, capacity_scheduler_policy="MAX_UTILIZATION")
    f = features(version)
    options = tmp_path / "o.yaml"
    options.write_text(yaml.safe_dump(build_options(cfg, f, kv_tokens=4096)))
    argv = [sys.executable, str(FAKE)] + build_argv(cfg, 1, options, f)[1:]
    env = dict(os.environ, FAKE_TRTLLM_VERSION=version, FAKE_TRTLLM_FAIL_AT_START="oom", FAKE_TRTLLM_START_DELAY="0")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert "CUDA out of memory" in done.stderr, done.stderr


def test_stand_in_refuses_a_release_mismatch(tmp_path):
    cfg = TrtllmConfig(model=str(model_dir(tmp_path / "m", TINY)), kv_cache_dtype="fp8")
    options = tmp_path / "o.yaml"
    options.write_text(yaml.safe_dump(build_options(cfg, features("1.2.0"))))
    env = dict(os.environ, FAKE_TRTLLM_VERSION="0.21.0", FAKE_TRTLLM_START_DELAY="0")
    done = subprocess.run([sys.executable, str(FAKE)] + build_argv(cfg, 1, options, features("1.2.0"))[1:],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2 and "No such option: --config" in done.stderr
    assert classify_trtllm_log(done.stderr).startswith("trtllm-serve rejected an option")


def test_kv_byte_budget_becomes_tokens(tmp_path):
    ckpt = inspect_checkpoint(str(model_dir(tmp_path / "m", LLAMA_8B)))
    cfg = TrtllmConfig(model=ckpt.model, kv_cache_memory_bytes=4 * 2**30, tensor_parallel_size=2)
    per_token = kv_bytes_per_token(cfg, ckpt)
    assert per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB in bf16
    assert kv_budget_tokens(cfg, per_token) == 4 * 2**30 * 2 // per_token  # per-GPU bytes x TP
    fp8 = cfg.model_copy(update={"kv_cache_dtype": "fp8"})
    assert kv_bytes_per_token(fp8, ckpt) == per_token // 2
    with pytest.raises(ConfigError, match="no readable config.json"):
        kv_budget_tokens(TrtllmConfig(model="org/name", kv_cache_memory_bytes=2**30), None)


def test_extra_options_cannot_override_measurement_settings():
    cfg = TrtllmConfig(model="/m", extra_llm_api_options={"enable_iter_perf_stats": False})
    with pytest.raises(ConfigError, match="enable_iter_perf_stats"):
        build_options(cfg, features("1.2.0"))
    ok = TrtllmConfig(model="/m", extra_llm_api_options={"kv_cache_config": {"enable_block_reuse": False}})
    assert build_options(ok, features("1.2.0"))["kv_cache_config"] == {"enable_block_reuse": False}


def test_registered_with_trtllm_names_for_the_common_knobs():
    cfg = config_from_dict({"kind": "trtllm", "model": "/m", "kv_cache_free_gpu_memory_fraction": 0.7,
                            "max_seq_len": 2048, "tp_size": 4})
    assert isinstance(cfg, TrtllmConfig) and BACKENDS["trtllm"].config_class is TrtllmConfig
    assert (cfg.memory_fraction, cfg.max_model_len, cfg.tensor_parallel_size) == (0.7, 2048, 4)
    assert cfg.knob_names["kv_cache_memory_bytes"] == "kv_cache_config.max_tokens"


# --- precision ------------------------------------------------------------------------------

def test_fp8_refused_on_an_unquantized_checkpoint(tmp_path):
    ckpt = inspect_checkpoint(str(model_dir(tmp_path / "m", LLAMA_8B)))
    with pytest.raises(UnsupportedConfig, match="huggingface_example.sh --model .* --quant fp8"):
        check_supported(TrtllmConfig(model=ckpt.model, precision="fp8"), (9, 0), ckpt)
    with pytest.raises(UnsupportedConfig, match="not a local directory"):
        check_supported(TrtllmConfig(model="meta-llama/Llama-3.1-8B", precision="fp8"), (9, 0),
                        inspect_checkpoint("meta-llama/Llama-3.1-8B"))


@pytest.mark.parametrize("files", [
    {"hf_quant_config": {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8",
                                                                            "kv_cache_quant_algo": "FP8"}}},
    {"config": {**LLAMA_8B, "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}},
    {"config": {**LLAMA_8B, "quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}}},
])
def test_fp8_accepted_on_a_quantized_checkpoint(tmp_path, files):
    config = files.pop("config", LLAMA_8B)
    ckpt = inspect_checkpoint(str(model_dir(tmp_path / "m", config, **files)))
    assert ckpt.fp8_weights
    check_supported(TrtllmConfig(model=ckpt.model, precision="fp8"), (9, 0), ckpt)
    check_supported(TrtllmConfig(model=ckpt.model, precision="fp8"), None, ckpt)  # no GPU visible: not refused
    with pytest.raises(UnsupportedConfig, match="compute capability >= 8.9"):  # FP8 weights on an A100
        check_supported(TrtllmConfig(model=ckpt.model, precision="fp8"), (8, 0), ckpt)
    with pytest.raises(UnsupportedConfig, match="use precision: fp8"):  # bf16 would measure FP8 weights
        check_supported(TrtllmConfig(model=ckpt.model, precision="bf16"), (9, 0), ckpt)


def test_fp8_kv_cache_allowed_on_ampere_and_its_bytes(tmp_path):
    ckpt = inspect_checkpoint(str(model_dir(tmp_path / "m", LLAMA_8B)))
    check_supported(TrtllmConfig(model=ckpt.model, kv_cache_dtype="fp8"), (8, 0), ckpt)
    with pytest.raises(UnsupportedConfig, match=">= 8.0"):
        check_supported(TrtllmConfig(model=ckpt.model, kv_cache_dtype="fp8"), (7, 5), ckpt)
    with pytest.raises(UnsupportedConfig, match="NVIDIA/TensorRT-LLM#5260"):
        check_supported(TrtllmConfig(model=ckpt.model, precision="fp32"), (9, 0), ckpt)
    # A checkpoint that prescribes an FP8 KV cache gets one with kv_cache_dtype auto.
    fp8kv = inspect_checkpoint(str(model_dir(tmp_path / "q", LLAMA_8B, hf_quant_config={
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}})))
    assert kv_bytes_per_token(TrtllmConfig(model=fp8kv.model, precision="fp8"), fp8kv) == 2 * 32 * 8 * 128


def test_engine_directory_is_read(tmp_path):
    engine = model_dir(tmp_path / "e", {"pretrained_config": {**LLAMA_8B, "head_size": 128, "quantization": {
        "quant_algo": "FP8", "kv_cache_quant_algo": None}}, "build_config": {}})
    ckpt = inspect_checkpoint(str(engine))
    assert ckpt.engine and ckpt.fp8_weights and ckpt.shape.kv_bytes_per_token(2) == 2 * 32 * 8 * 128 * 2


# --- version detection, log classification, KV pool from the log ----------------------------

def wrapper(bin_dir: Path, script: Path = FAKE) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "trtllm-serve"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    exe.chmod(0o755)
    return exe


def test_version_detection(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{wrapper(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "1.1.0rc2")
    version, source = detect_version("trtllm-serve")  # a shell wrapper: asked with --version
    assert str(version) == "1.1.0rc2" and "--version" in source
    # A pip console script: its #! Python's package metadata is asked (the real click CLI has no --version).
    python = tmp_path / "venv" / "python3"
    python.parent.mkdir()
    python.write_text('#!/bin/sh\n[ "$1" = "-c" ] && echo 1.0.0 || exit 2\n')  # answers the metadata probe only
    python.chmod(0o755)
    console_script = tmp_path / "venv" / "trtllm-serve"
    console_script.write_text(f"#!{python}\nimport sys\nsys.exit(2)\n")
    console_script.chmod(0o755)
    version, source = detect_version(str(console_script))
    assert str(version) == "1.0.0" and "package metadata" in source
    wrapper(tmp_path / "bin2")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin2'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_NO_VERSION_FLAG", "1")
    version, source = detect_version("trtllm-serve")
    assert version is None and "assumed" in source
    assert CliFeatures.for_version(version).config_flag == "--extra_llm_api_options"
    with pytest.raises(ServerStartError, match="not on PATH"):
        detect_version("no-such-trtllm-serve")


@pytest.mark.parametrize("failure, cause", [
    ("oom", "out of memory"), ("engine", "TensorRT engine build failed"),
    ("quant", "unsupported dtype or quantization on this device"), ("kv", "KV cache too small for max_seq_len"),
])
def test_log_causes(failure, cause):
    assert classify_trtllm_log(fake_trtllm_serve.START_FAILURES[failure]) == cause
    assert classify_trtllm_log("RuntimeError: Failed to bind socket to 127.0.0.1:8000: [Errno 98] Address "
                               "already in use") == "port already in use"


def test_kv_pool_from_log():
    log = ("[TensorRT-LLM][INFO] Number of blocks in KV cache primary pool: 8219\n"
           "[TensorRT-LLM][INFO] Number of tokens per block: 32.\n"
           "[TensorRT-LLM][INFO] [MemUsageChange] Allocated 16.05 GiB for max tokens in paged KV cache (263008).\n")
    pool = kv_pool_from_log(log, 131072, "bfloat16")
    assert (pool["tokens"], pool["num_blocks"], pool["block_size"], pool["bytes"]) == (263008, 8219, 32, 263008 * 131072)
    assert kv_pool_from_log(log, None, "fp8")["bytes"] == int(16.05 * 2**30)
    assert kv_pool_from_log("nothing here", 1, "auto")["tokens"] is None


# --- iteration statistics -------------------------------------------------------------------

def iteration(active, queued, used, paused=0, max_blocks=1000, per_block=64):
    """One entry of trtllm-serve's /metrics list, in the documented shape."""
    return {"iter": 1, "iterLatencyMS": 15.5, "timestamp": "01-02-2026 10:11:12", "numActiveRequests": active,
            "numQueuedRequests": queued, "numCompletedRequests": 0, "maxNumActiveRequests": 64,
            "gpuMemUsage": 4_000_000_000 + used, "cpuMemUsage": 2_000_000_000, "pinnedMemUsage": 0,
            "kvCacheStats": {"maxNumBlocks": max_blocks, "freeNumBlocks": max_blocks - used, "usedNumBlocks": used,
                             "tokensPerBlock": per_block, "allocTotalBlocks": used, "allocNewBlocks": 0,
                             "reusedBlocks": 30, "missedBlocks": 70, "cacheHitRate": 0.3},
            "inflightBatchingStats": {"numScheduledRequests": active, "numContextRequests": 1,
                                      "numGenRequests": active - 1, "numPausedRequests": paused,
                                      "numCtxTokens": 256, "microBatchId": 0, "avgNumDecodedTokensPerIter": 1.0}}


def test_every_iteration_of_an_answer_is_used(tmp_path):
    pools = []
    reader = TrtllmIterStatsReader("http://127.0.0.1:1/metrics-parse", on_pool=lambda b, t: pools.append((b, t)))
    answer = [iteration(3, 0, 100), iteration(9, 4, 700, paused=2), iteration(5, 1, 300, paused=1)]
    samples = reader.parse(answer)
    assert [s["running"] for s in samples] == [3, 9, 5]
    assert samples[1]["kv_usage"] == pytest.approx(0.7) and samples[1]["waiting"] == 4
    assert [s["preemptions"] for s in samples] == [0, 2, 3]  # paused request-iterations, cumulative
    assert samples[-1]["iterations"] == 3 and samples[-1]["prefix_hits"] == 30 and samples[-1]["prefix_queries"] == 100
    assert pools == [(1000, 64)]
    # An empty queue (no iteration since the last read): counters only, no made-up gauges.
    assert reader.parse([]) == [{"iterations": 3.0, "preemptions": 3.0}]
    reader.close()
    reader = TrtllmIterStatsReader("http://127.0.0.1:1/metrics-parse")

    class Canned:  # the sampler takes each gauge's peak over one answer, not the last iteration's
        source = "canned"
        answers = [answer, [], [iteration(2, 0, 50)] * 40]

        def read(self):
            return reader.parse(self.answers.pop(0))

    sampler = TelemetrySampler(Canned(), tmp_path / "t.jsonl", gpu_indices=[])
    first, empty, many = (sampler._sample_once() for _ in range(3))
    assert (first["running"], first["waiting"], first["kv_usage"], first["preemptions"]) == (9, 4, 0.7, 3)
    assert "running" not in empty and empty["iterations"] == 3
    assert many["iterations"] == 43 and many["running"] == 2
    reader.close()


def test_one_poller_per_metrics_url():
    url = "http://127.0.0.1:1/metrics-claim"
    first = TrtllmIterStatsReader(url)
    with pytest.raises(ConfigError, match="already has a reader"):
        TrtllmIterStatsReader(url)
    first.close()
    second = TrtllmIterStatsReader(url)
    del second
    gc.collect()  # a reader dropped without close() does not hold the URL
    TrtllmIterStatsReader(url).close()


# --- the whole lifecycle against the stand-in -----------------------------------------------

@pytest.fixture
def fake_trtllm(tmp_path, monkeypatch):
    """`trtllm-serve` on PATH is the stand-in; FAKE_* variables (monkeypatched) steer it."""
    monkeypatch.setenv("PATH", f"{wrapper(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_START_DELAY", "0")
    monkeypatch.setenv("FAKE_TRTLLM_TTFT", "0.02")
    monkeypatch.setenv("FAKE_TRTLLM_ITL", "0.004")
    model = model_dir(tmp_path / "tiny-llama", TINY)

    def launch(**overrides):
        cfg = TrtllmConfig(model=str(model), max_batch_size=2, startup_timeout_s=30, **overrides)
        return launch_trtllm(cfg, tmp_path / "out", capability=(9, 0))

    return launch


def dataset(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"prompt number {i} " * 8, "output_len": 16}) + "\n"
                            for i in range(n)))
    return path


def load(server, tmp_path, requests=12, concurrency=4, telemetry=None):
    config = LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=tmp_path / "run",
                            levels=[LoadLevel(concurrency=concurrency, num_requests=requests, warmup_requests=4)], show_progress=False,
                            workload=Workload(dataset=dataset(tmp_path), output_len=16))
    from servesweep.loadgen.load_runner import run_async

    return run_async(run_load_test(config, telemetry=telemetry, server_watch=server, server_info=server.info(),
                                   telemetry_tail_s=0.3))


def group_alive(pgid: int) -> bool:
    from servesweep.backends.process import _group_alive

    return _group_alive(pgid)


def test_lifecycle_launch_load_telemetry_stop(fake_trtllm, tmp_path):
    server = fake_trtllm()
    try:
        assert urllib.request.urlopen(server.base_url + "/health").status == 200
        assert server.version == "1.2.0" and server.features.config_flag == "--config"
        per_token = 2 * 2 * 4 * 64 * 2
        assert server.kv_pool["tokens"] == 512 * 32 and server.kv_pool["bytes"] == 512 * 32 * per_token
        assert server.prometheus  # return_perf_metrics mounted /prometheus/metrics
        telemetry = server.telemetry(tmp_path / "telemetry.jsonl", interval_s=0.05)
        with pytest.raises(ConfigError, match="already has a reader"):
            server.telemetry(tmp_path / "second.jsonl")
        summary = load(server, tmp_path, telemetry=telemetry)
        assert summary["completed"] == 12 and summary["failed"] == 0 and not summary["abort_reason"]
        t = summary["levels"][0]["telemetry"]
        assert t["samples"] > 3 and t["running_batch_peak"] == 2  # max_batch_size 2
        assert t["waiting_peak"] >= 1 and 0 < t["kv_cache_peak_frac"] < 1
        assert t["preemptions"] == 0 and t["server_latency_mean_ms"]["ttft"] > 15
        assert t["server_gpu_mem_peak_bytes"] > 40 * 2**30
        info = summary["server"]
        assert info["scheduler_policy"] == "GUARANTEED_NO_EVICT" and "not mean 'no memory pressure'" in \
            info["preemption_semantics"]
        assert yaml.safe_load(Path(info["options_file"]).read_text())["enable_iter_perf_stats"] is True
        server.telemetry(tmp_path / "next.jsonl").stop()  # the stopped sampler released the URL
    finally:
        server.stop()
    assert not group_alive(server.process.pid)


def test_crash_at_start_is_classified(fake_trtllm, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_FAIL_AT_START", "oom")
    with pytest.raises(ServerStartError) as err:
        fake_trtllm()
    assert err.value.cause == "out of memory" and "CUDA out of memory" in err.value.log_tail


def test_crash_under_load_aborts_the_run(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_CRASH_AFTER", "8")
    server = fake_trtllm()
    try:
        summary = load(server, tmp_path, requests=200)
        # The watcher or the client's own unreachable-server check, whichever sees it first.
        assert summary["abort_reason"] and summary["completed"] < 200
        reason = server.poll_failure()
        assert reason.startswith("server process exited") and "engine failed (CUDA error)" in reason
    finally:
        server.stop()


def test_health_503_mid_run_is_a_dead_server(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_UNHEALTHY_AFTER", "2")
    server = fake_trtllm()
    server.health_interval_s = 0.1
    try:
        assert server.poll_failure() is None
        for _ in range(3):
            req = urllib.request.Request(server.base_url + "/v1/completions", method="POST",
                                         data=json.dumps({"prompt": "hi", "max_tokens": 2}).encode())
            try:
                urllib.request.urlopen(req).read()
            except urllib.error.HTTPError:
                pass
        deadline = time.monotonic() + 60  # a bound, not a timing: the loop ends when the watch says so
        while (reason := server.poll_failure()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reason and "HTTP 503" in reason and server.process.proc.poll() is None
    finally:
        server.stop()


def test_prometheus_fallback_when_json_metrics_are_off(fake_trtllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_JSON_METRICS", "0")
    server = fake_trtllm()
    try:
        telemetry = server.telemetry(tmp_path / "telemetry.jsonl", interval_s=0.05)
        summary = load(server, tmp_path, telemetry=telemetry)
        t = summary["levels"][0]["telemetry"]
        assert "prometheus" in t["metrics_source"] and t["running_batch_peak"] == 2
        assert t["server_latency_mean_ms"]["tpot"] == pytest.approx(4, abs=4)
        assert t["kv_pool_tokens"] == 512 * 32
    finally:
        server.stop()
