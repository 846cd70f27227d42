"""Server launch, failure classification and clean-up (stand-in executables and the real CPU vLLM)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from servesweep.models.shape import read_model_shape
from servesweep.backends.process import ServerProcess, free_port
from servesweep.backends.telemetry import (
    kv_pool_from_cache_config,
    parse_cache_config,
    parse_prometheus,
    window_stats,
)
from servesweep.backends.vllm import (
    METRICS as VLLM_METRICS,
    VllmConfig as VllmServerConfig,
    build_argv,
    check_supported,
    classify_vllm_log as classify_log,
    launch_vllm,
)
from servesweep.errors import ServerStartError, UnsupportedConfig
from servesweep.loadgen.workload import Workload


def parse_vllm_metrics(text):
    return parse_prometheus(text, VLLM_METRICS)

METRICS = textwrap.dedent('''\
    # HELP vllm:num_requests_running Number of requests in model execution batches.
    # TYPE vllm:num_requests_running gauge
    vllm:num_requests_running{engine="0",model_name="m"} 7.0
    vllm:num_requests_running{engine="1",model_name="m"} 5.0
    vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
    vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
    vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
    vllm:num_preemptions_total{engine="0",model_name="m"} 2.0
    vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
    vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
    vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
    vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="1000"} 1.0
    ''')


def test_parse_metrics_sums_engines_and_takes_peak_kv():
    sample = parse_vllm_metrics(METRICS)
    assert sample == {"running": 12.0, "waiting": 3.0, "kv_usage": 0.5, "preemptions": 2.0,
                      "generation_tokens": 100.0}
    # Older vLLM name for the KV gauge
    assert parse_vllm_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n') == {"kv_usage": 0.75}


def test_kv_pool_from_blocks_and_model_shape(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}))
    per_token = read_model_shape(tmp_path).kv_bytes_per_token(2)
    assert per_token == 2 * 32 * 8 * 128 * 2  # Llama-3-8B in bf16: 128 KiB per token
    pool = kv_pool_from_cache_config(parse_cache_config(METRICS), per_token)
    assert pool["tokens"] == 16000 and pool["bytes"] == 16000 * per_token


def test_window_stats_margin_and_preemption():
    samples = [{"t": 0.0, "running": 0, "waiting": 0, "kv_usage": 0.0, "preemptions": 5.0}]
    samples += [{"t": 1 + i * 0.1, "running": 4 + i, "waiting": i, "kv_usage": 0.1 * i, "preemptions": 5.0,
                 "gpus": [{"mem_used": 60, "mem_total": 100, "util_pct": 90, "power_w": 300.0}]} for i in range(8)]
    stats = window_stats(samples, 1.0, 2.0, {"tokens": 1000, "bytes": 2000})
    assert stats["running_batch_peak"] == 11 and stats["running_batch_mean"] == pytest.approx(7.5)
    assert stats["waiting_peak"] == 7 and stats["preemptions"] == 0 and not stats["preempted"]
    assert stats["kv_cache_peak_frac"] == pytest.approx(0.7)
    assert stats["kv_cache_peak_bytes"] == pytest.approx(1400)
    assert stats["oom_margin_pct"] == pytest.approx(30)
    assert stats["device_headroom_pct"] == pytest.approx(40)
    samples[-1]["preemptions"] = 9.0
    preempting = window_stats(samples, 1.0, 2.0, {"tokens": 1000, "bytes": 2000})
    assert preempting["preemptions"] == 4 and preempting["preempted"] and preempting["oom_margin_pct"] == 0


@pytest.mark.parametrize("log,cause", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "out of memory"),
    ("ValueError: To serve at least one request with the models's max seq len (8192), (1.0 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (0.5 GiB).", "KV cache too small for max_model_len"),
    ("OSError: [Errno 98] Address already in use", "port already in use"),
    ("ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0.",
     "unsupported dtype or quantization on this device"),
    ("ValueError: The quantization method fp8 is not supported for the current GPU.",
     "unsupported dtype or quantization on this device"),
    ("OSError: /x does not appear to have a file named config.json.", "bad model path"),
    ("something else entirely", "server exited (see log)"),
])
def test_failure_classification(log, cause):
    assert classify_log(log) == cause


def test_precision_flags():
    argv = build_argv(VllmServerConfig(model="/m", precision="fp8", max_num_seqs=64, kv_cache_dtype="fp8"), 8000)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--dtype bfloat16 --quantization fp8" in joined and "--kv-cache-dtype fp8" in joined
    assert "--max-num-seqs 64" in joined and "--host 127.0.0.1 --port 8000" in joined
    assert "--dtype float32" in " ".join(build_argv(VllmServerConfig(model="/m", precision="fp32"), 1))
    assert "--dtype float16" in " ".join(build_argv(VllmServerConfig(model="/m", precision="fp16"), 1))


def test_fp8_refused_on_a100_before_launch(tmp_path):
    check_supported(VllmServerConfig(model="/m", precision="fp8"), (9, 0))  # H100: fine
    check_supported(VllmServerConfig(model="/m", precision="fp8"), (8, 9))  # L40S / L4: fine
    check_supported(VllmServerConfig(model="/m", precision="bf16"), (8, 0))
    with pytest.raises(UnsupportedConfig, match="8.0"):
        launch_vllm(VllmServerConfig(model=str(tmp_path), precision="fp8"), tmp_path, capability=(8, 0))
    with pytest.raises(UnsupportedConfig):
        check_supported(VllmServerConfig(model="/m", kv_cache_dtype="fp8"), (8, 0))
    assert not list(tmp_path.glob("server-*.log"))  # nothing was launched


def test_nonexistent_model_path_is_refused_before_launch(tmp_path):
    with pytest.raises(ServerStartError) as err:
        launch_vllm(VllmServerConfig(model=str(tmp_path / "no-such-model")), tmp_path)
    assert err.value.cause == "bad model path" and "no-such-model" in str(err.value)


def test_taken_port_is_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerStartError) as err:
            launch_vllm(VllmServerConfig(model=str(tmp_path), port=port), tmp_path)
    assert err.value.cause == "port already in use" and str(port) in str(err.value)


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "fake_server.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_server_exiting_early_is_reported_at_once_with_its_log(tmp_path):
    argv = _script(tmp_path, """
        import sys, time
        time.sleep(0.5)
        print("INFO loading weights")
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB", flush=True)
        sys.exit(1)
    """)
    server = ServerProcess(argv, tmp_path / "server.log", "127.0.0.1", free_port(), classify=classify_log)
    server.start()
    start = time.monotonic()
    with pytest.raises(ServerStartError) as err:
        server.wait_healthy(timeout_s=60)
    assert time.monotonic() - start < 10
    assert err.value.cause == "out of memory"
    assert "Tried to allocate 20.00 GiB" in err.value.log_tail


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2:].split()
            if rest[2] == str(pgid) and rest[0] != "Z":
                pids.append(int(entry))
    return pids


def test_stop_takes_down_the_whole_group_even_when_sigint_is_ignored(tmp_path):
    argv = _script(tmp_path, """
        import signal, subprocess, sys, time
        from http.server import BaseHTTPRequestHandler, HTTPServer
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"])
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers()
            def log_message(self, *a): pass
        HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """)
    port = free_port()
    server = ServerProcess(argv + [str(port)], tmp_path / "server.log", "127.0.0.1", port)
    server.start()
    server.wait_healthy(timeout_s=30)
    time.sleep(0.5)
    assert len(_pids_in_group(server.pid)) == 2
    server.stop(grace_s=1.0)
    assert _pids_in_group(server.pid) == []


def test_bad_model_directory_fails_with_a_classified_cause(tmp_path):
    # Refused before anything starts: a directory without config.json is no model.
    empty = tmp_path / "empty-model"
    empty.mkdir()
    start = time.monotonic()
    with pytest.raises(ServerStartError) as err:
        launch_vllm(VllmServerConfig(model=str(empty), load_format="dummy", startup_timeout_s=300), tmp_path)
    assert err.value.cause == "bad model path", err.value.log_tail
    assert "has no config.json" in err.value.detail and time.monotonic() - start < 5


def test_server_killed_mid_run_ends_the_run_and_keeps_records(tmp_path):
    """A launched server (the stand-in, in its own process group) killed under load: the run ends
    with the cause, and every record so far is on disk."""
    from servesweep.loadgen.arrivals import LoadLevel
    from servesweep.loadgen.records import read_records
    from servesweep.loadgen.load_runner import run_async
    from servesweep.loadtest import LoadTestConfig, run_load_test

    port = free_port()
    server = ServerProcess([sys.executable, "-m", "servesweep.testing.stub_server", "--port", str(port),
                            "--itl", "0.002"], tmp_path / "server.log", "127.0.0.1", port,
                           health_path="/v1/models")
    server.start()
    try:
        server.wait_healthy(timeout_s=30)
        records = tmp_path / "run" / "records.jsonl"

        def killer() -> None:
            while not records.exists() or len(records.read_text().splitlines()) < 10:
                time.sleep(0.1)
            os.killpg(server.pid, signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()
        config = LoadTestConfig(base_url=server.base_url, out_dir=tmp_path / "run", show_progress=False,
                                levels=[LoadLevel(concurrency=4, duration_s=300)],
                                workload=Workload(input_len="16", output_len="50"))
        start = time.monotonic()
        summary = run_async(run_load_test(config, server_watch=server))
        assert time.monotonic() - start < 60
    finally:
        server.stop()
    assert "server" in summary["abort_reason"]
    assert summary["completed"] >= 10
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["abort_reason"] == summary["abort_reason"]
    assert len(list(read_records(records))) >= summary["completed"]


def test_servesweep_stopped_by_sigterm_stops_its_server_group(tmp_path):
    """The clean-up handlers: SIGTERM to a process that launched a server takes the server's whole
    group down (the real-vLLM case with SIGKILL is below)."""
    port = free_port()
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from servesweep.backends.process import ServerProcess
        s = ServerProcess([sys.executable, "-m", "servesweep.testing.stub_server", "--port", "{port}"],
                          Path(r"{tmp_path}") / "server.log", "127.0.0.1", {port}, health_path="/v1/models")
        s.start()
        s.wait_healthy(30)
        print(s.pid, flush=True)
        time.sleep(600)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(owner.stdout.readline())
        assert _pids_in_group(pgid)
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _pids_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pids_in_group(pgid) == []
    finally:
        if owner.poll() is None:
            owner.kill()


@pytest.mark.vllm
def test_killing_servesweep_leaves_no_server_behind(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "servesweep", "run", "--backend", "vllm", "--model", str(tiny_model_dir),
         "--load-format", "dummy", "--max-model-len", "1024", "--concurrency", "4", "--duration", "600",
         # eager fp32: a start without torch.compile (~50 s instead of ~100 s on a fresh machine)
         "--precision", "fp32", "--server-arg=--enforce-eager",
         "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "records.jsonl").exists() or len((out / "records.jsonl").read_text().splitlines()) < 5:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no records within 300 s"
            time.sleep(0.5)
        server_pgid = _server_group(out)
        assert _pids_in_group(server_pgid), "server group not found"
        proc.send_signal(signal.SIGKILL)  # no handler runs: PR_SET_PDEATHSIG stops the server
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _pids_in_group(server_pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _pids_in_group(server_pgid) == [], "server processes survived servesweep"
    finally:
        if proc.poll() is None:
            proc.kill()


def _server_group(out: Path) -> int:
    """The launched server's process group: the processes whose stdout is its log file."""
    log = str(next(out.glob("server-*.log")))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/fd/1") == log:
                    return os.getpgid(int(entry))
            except OSError:
                continue
    raise AssertionError("no server process found")
