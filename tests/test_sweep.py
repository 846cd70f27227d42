"""Sweeps end to end: a real CPU sweep producing every artifact, resume, and failed configurations."""

import json
import time
from pathlib import Path

import pytest

from servesweep.cli import main
from servesweep.sweep.runner import read_points

ROOT = Path(__file__).parent.parent


def test_configs_that_cannot_start_become_failed_points(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"""
name: broken-model
model: {tmp_path / 'no-such-model'}
load: {{concurrency: [1, 4], num_requests: 4}}
sweep: {{precision: [bf16, fp32]}}
""")
    assert main(["sweep", str(scenario), "--out", str(tmp_path / "out"), "--no-report"]) == 0
    points = read_points(tmp_path / "out")
    assert len(points) == 4
    assert {p["status"] for p in points} == {"failed"}
    assert {p["cause"] for p in points} == {"bad model path"}


def test_report_on_a_non_sweep_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


@pytest.mark.vllm
def test_cpu_smoke_sweep_produces_every_artifact_and_resumes(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "sweep"
    assert main(["sweep", str(ROOT / "scenarios" / "cpu-smoke.yaml"), "--out", str(out), "--no-progress"]) == 0
    points = read_points(out)
    assert len(points) == 8 and all(p["status"] == "ok" for p in points)
    for name in ("report.html", "report.md", "points.csv", "recommendation.json"):
        assert (out / name).stat().st_size > 0
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["batch_sweep"]["knee_batch_size"] in {1, 4, 16, 32}
    assert len(rec["batch_sweep"]["by_precision"]["bf16"]["points"]) == 4
    for precision in ("fp32", "bf16"):
        entry = rec["precision_sweep"][precision]
        assert set(entry) >= {"throughput", "speedup_vs_fp32", "token_agreement", "logprob_cosine"}
        assert entry["throughput"] > 0
    assert rec["precision_sweep"]["fp32"]["token_agreement"] == 1.0
    comb = rec["combined_sweep"]
    assert set(comb) >= {"points", "baseline", "best_config", "speedup_vs_baseline", "vram_budget_bytes"}
    assert comb["baseline"]["precision"] == "fp32" and comb["baseline"]["batch"] == 1
    assert comb["speedup_vs_baseline"]["goodput"] > 1
    prod = rec["production_recommendation"]
    assert set(prod) >= {"sku", "precision", "max_num_seqs", "concurrency", "gpu_memory_utilization", "expected",
                         "kv_cache_peak_bytes", "oom_margin_pct"}
    assert prod["kv_cache_peak_bytes"] > 0
    skus = rec["sku_to_preferred_precision"]
    assert skus["A100-80GB"]["precision"] == "bf16" and skus["H100-SXM"]["precision"] == "fp8"
    assert all(e["basis"] == "projected" for e in skus.values())  # no GPU was measured
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "knee" in html
    # Resume: every point is done, so no server starts and the points stay as they were.
    start = time.monotonic()
    assert main(["sweep", str(ROOT / "scenarios" / "cpu-smoke.yaml"), "--out", str(out), "--no-report"]) == 0
    assert time.monotonic() - start < 20
    assert len(read_points(out)) == 8
