"""`servesweep run --backend trtllm` and a sweep over both engines, end to end against the
stand-in `trtllm-serve` (TensorRT-LLM itself cannot be installed here: the adapter has never met a
real TensorRT-LLM server)."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import yaml

from servesweep.cli import main
from servesweep.results import read_points, read_recommendation
from servesweep.testing import fake_trtllm_serve


@pytest.fixture
def stand_in(tmp_path, monkeypatch, tiny_model_dir):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtllm-serve"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_trtllm_serve.__file__}" "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_START_DELAY", "0")
    monkeypatch.setenv("FAKE_TRTLLM_TTFT", "0.02")
    monkeypatch.setenv("FAKE_TRTLLM_ITL", "0.004")
    return tiny_model_dir


def test_run_launches_trtllm_samples_its_iteration_stats_and_stops_it(stand_in, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--backend", "trtllm", "--model", str(stand_in), "--max-batch-size", "4",
                 "--concurrency", "2,4", "--num-requests", "12", "--input-len", "32", "--output-len", "16",
                 "--out", str(out), "--no-progress", "--startup-timeout", "60"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["server"]["backend"] == "trtllm" and summary["completed"] == 24
    assert "--max_batch_size" in summary["server"]["command"]
    assert summary["levels"][1]["telemetry"]["running_batch_peak"] >= 2
    assert (out / "telemetry.jsonl").stat().st_size > 0


def test_a_sweep_over_both_engines(stand_in, tmp_path):
    # vLLM is refused before it starts (its port is taken), so the suite's vLLM budget is untouched;
    # TensorRT-LLM (the stand-in) runs every level. Both land in one points file and one report.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        scenario = {
            "name": "engines", "model": str(stand_in), "max_model_len": 512,
            "workload": {"input_len": 32, "output_len": 16},
            "load": {"concurrency": [1, 4], "num_requests": 8},
            "server": [{"kind": "vllm", "port": taken.getsockname()[1]}, {"kind": "trtllm", "max_batch_size": 4}],
            "sweep": {"precision": ["bf16"]}, "drift": None, "verify": False,
        }
        path = tmp_path / "engines.yaml"
        path.write_text(yaml.safe_dump(scenario))
        assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    points = read_points(tmp_path / "out")
    by_config = {(p.config, p.level): p for p in points}
    assert by_config[("bf16", "c1")].status == "failed" and "port" in by_config[("bf16", "c1")].cause
    assert by_config[("trtllm-bf16-batch4", "c4")].status == "ok"
    assert by_config[("trtllm-bf16-batch4", "c4")].server.knobs["memory_fraction"] == \
        "kv_cache_free_gpu_memory_fraction"
    assert (tmp_path / "out" / "report.html").exists()


def test_a_verified_trtllm_recommendation_names_its_own_knobs(stand_in, tmp_path):
    # The sizing is written in TensorRT-LLM's knobs, by its rule: the KV budget as
    # kv_cache_config.max_tokens (bytes / KV bytes per token), the batch cap as max_batch_size;
    # none of vLLM's names. (No device here: no free-memory fraction, servesweep.memory_fraction's rule
    # is checked in tests/unit/test_memory_knobs.py.)
    scenario = {
        "name": "trt-verify", "model": str(stand_in), "max_model_len": 512,
        "workload": {"input_len": 32, "output_len": 16},
        # Levels long enough (about 1 s) for the 0.25 s telemetry sampler to see the KV peak the
        # sizing needs, even on a busy machine.
        "load": {"concurrency": [2, 4], "num_requests": 48},
        "server": [{"kind": "trtllm", "max_batch_size": 4}],
        "sweep": {"precision": ["bf16"]}, "drift": None, "verify": True,
        # The headroom after a passing verification, cut to one short step: the default (six load
        # and five length windows of 10 s) made this test take four minutes.
        "headroom": {"factors": [1.0], "length_factors": [], "window_s": 1.0},
    }
    path = tmp_path / "trt.yaml"
    path.write_text(yaml.safe_dump(scenario))
    main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    rec = json.loads((tmp_path / "out" / "recommendation.json").read_text())["production_recommendation"]
    # Passed or not (a margin near the band's edge can tip on a busy machine), the last attempt's
    # sizing is what the recommendation names.
    assert rec["server_kind"] == "trtllm" and rec["verification"].get("attempts"), rec["verification"]
    sizing = rec["verification"]["attempts"][-1]["sizing"]
    assert sizing["kind"] == "trtllm" and sizing["memory_fraction_of"] == "free"
    per_token = sizing["inputs"]["bytes_per_token"] or sizing["inputs"]["pool_bytes"] / sizing["inputs"]["pool_tokens"]
    tokens = int(sizing["kv_cache_memory_bytes"] // per_token)
    assert sizing["knobs"] == {"max_batch_size": sizing["max_num_seqs"], "kv_cache_config.max_tokens": tokens,
                               "kv_cache_free_gpu_memory_fraction": None}
    assert sizing["flags"][:2] == ["--max_batch_size", str(sizing["max_num_seqs"])]
    assert rec["kv_cache_config.max_tokens"] == tokens and rec["max_batch_size"] == sizing["max_num_seqs"]
    assert not {"max_num_seqs", "gpu_memory_utilization", "--kv-cache-memory-bytes"} & (set(rec) | set(sizing["flags"]))
    # Read back through recommendation.json's model: the knobs map names TensorRT-LLM's own.
    typed = read_recommendation(tmp_path / "out" / "recommendation.json").production_recommendation
    assert typed.server_kind == "trtllm" and typed.knob_names()["memory_fraction"] == "kv_cache_free_gpu_memory_fraction"
    assert typed.server_knob("max_batch_size") == sizing["max_num_seqs"] and typed.verification.attempts


def test_with_repeats_the_verification_traffic_run_and_the_recommendation_carry_intervals(stand_in, tmp_path):
    # Issue 25: the traffic run (whose SLO verdict the recommendation rests on) runs the scenario's
    # repeats, and the recommendation states the interval of the point it is based on.
    scenario = {
        "name": "trt-verify-repeats", "model": str(stand_in), "max_model_len": 512,
        "workload": {"input_len": 32, "output_len": 16},
        "load": {"concurrency": [2, 4], "num_requests": 48, "repeats": 2},
        "slo": {"ttft_ms": 60000},
        "server": [{"kind": "trtllm", "max_batch_size": 4}],
        "sweep": {"precision": ["bf16"]}, "drift": None, "verify": True,
        "headroom": False,  # not what this test is about (the test above runs one step of it)
    }
    path = tmp_path / "trt.yaml"
    path.write_text(yaml.safe_dump(scenario))
    main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    rec = read_recommendation(tmp_path / "out" / "recommendation.json").production_recommendation
    traffic = rec.verification.attempts[-1].traffic.to_file()
    assert traffic["n"] == 2 and traffic["ci95"].get("output_tok_s"), traffic
    stress = rec.verification.attempts[-1].stress.to_file()
    assert stress.get("n", 1) == 1
    u = rec.uncertainty
    assert u["repeats"] == 2 and u["output_tok_s"]["low"] is not None
    assert u["slo"]["ttft_ms"]["verdict"] in {"met", "uncertain", "missed"} and "2 repeats" in u["note"]
