"""The committed GPU examples against the validation criteria (servesweep.reports.criteria).

A committed example either meets every criterion or is listed in UNMET with exactly the criteria
it misses and why; a new or rerun example that misses one it does not declare fails here, and so
does a listed one that starts passing (the list, the README and the example's notes must then be
updated together)."""

import copy
import json
from pathlib import Path

import pytest

from servesweep.reports.criteria import check_recommendation, check_results_dir, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A results folder at the example's top (the H100 run) or in its sweep/ (bench/gpu/fetch.sh's layout).
GPU_EXAMPLES = sorted(d for p in EXAMPLES.glob("h*-*") for d in (p, p / "sweep")
                      if (d / "recommendation.json").exists())

# The 2026-11 H100 run predates the knee search, the verification run and the trained-weights
# quality runs (issue 16); the GPU was not lent for its rerun. Its drift is from random weights.
# The 2026-12-02 H200 run (two device sessions: bf16/fp8 ladders, verification, side by side and FP8
# proof in the first; fp16/fp32 ladders and the trained-weights quality sweep in the second) meets them all.
UNMET = {
    "h100-llama3-8b": {"batch_sweep", "drift_cosine", "production", "verified", "accuracy_gate"},
}


@pytest.mark.parametrize("example", GPU_EXAMPLES, ids=lambda p: p.parent.name if p.name == "sweep" else p.name)
def test_committed_example_meets_the_criteria_or_declares_what_it_misses(example):
    unmet = {c.name for c in check_results_dir(example) if not c.passed}
    name = example.parent.name if example.name == "sweep" else example.name
    assert unmet == UNMET.get(name, set())


def test_there_is_a_committed_h100_example():
    assert any(p.name.startswith("h100-") for p in GPU_EXAMPLES)


def _passing() -> dict:
    """The committed H100 recommendation with each unmet criterion's data set to a passing value."""
    rec = json.loads((EXAMPLES / "h100-llama3-8b" / "recommendation.json").read_text())
    rec["batch_sweep"]["by_precision"]["bf16"].update(knee_reached=True, knee_batch_size=32)
    rec["precision_sweep"]["bf16"]["logprob_cosine"] = 0.99
    rec["models"] = {"quality": {"model": "/tmp/trained-llama", "weights": "trained by servesweep", "dummy": False}}
    prod = rec["production_recommendation"]
    prod.update(oom_margin_pct=18.0, verified=True, oom_margin_source="verification stress run")
    rec["accuracy_gate"] = [{"precision": "fp8", "status": "passed", "metric": "perplexity",
                             "threshold": {"max_relative_increase": 0.02}, "method": {"samples": 64}}]
    return rec


def test_every_criterion_can_pass_and_each_can_fail():
    good = _passing()
    assert all(c.passed for c in check_recommendation(good))
    breaks = {
        "batch_sweep": lambda r: r["batch_sweep"]["by_precision"]["bf16"].update(knee_reached=False),
        "precisions": lambda r: r["precision_sweep"].pop("fp16"),
        "fp16_speedup": lambda r: r["precision_sweep"]["fp16"].update(throughput=1.1 * 971.27),
        "drift_cosine": lambda r: r["precision_sweep"]["fp16"].update(logprob_cosine=0.95),
        "dummy_weights": lambda r: r["models"]["quality"].update(dummy=True),
        "combined_sweep": lambda r: r["combined_sweep"]["speedup_vs_baseline"].update(goodput=2.9),
        "production": lambda r: r["production_recommendation"].update(oom_margin_pct=41.0),
        "verified": lambda r: r["production_recommendation"].update(oom_margin_source=None),
        "sku_table": lambda r: r["sku_to_preferred_precision"]["A100-80GB"].update(precision="fp8"),
        "accuracy_gate": lambda r: r["accuracy_gate"][0].pop("method"),
    }
    for name, damage in breaks.items():
        rec = copy.deepcopy(good)
        if name == "precisions":  # fp16's own criteria fail with it; only the named one is asserted
            damage(rec)
            assert not next(c for c in check_recommendation(rec) if c.name == name).passed
            continue
        damage(rec)
        unmet = {c.name for c in check_recommendation(rec) if not c.passed}
        assert unmet == {"drift_cosine" if name == "dummy_weights" else name}, name


def test_batch_sweep_needs_four_sizes_and_a_2x_range():
    rec = _passing()
    entry = rec["batch_sweep"]["by_precision"]["bf16"]
    entry["points"] = entry["points"][:3]
    assert not check_recommendation(rec)[0].passed
    rec = _passing()
    for p in rec["batch_sweep"]["by_precision"]["bf16"]["points"]:
        p["output_token_throughput"] = 1000.0
    assert "1.00x" in check_recommendation(rec)[0].detail


def test_command_exit_codes(tmp_path, capsys):
    assert main([str(EXAMPLES / "h100-llama3-8b")]) == 1
    assert "UNMET  verified" in capsys.readouterr().out
    good = tmp_path / "good"
    good.mkdir()
    (good / "recommendation.json").write_text(json.dumps(_passing()))
    assert main([str(good)]) == 0
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_recommendation_missing_or_mistyping_fields_leaves_criteria_unmet_not_a_crash(tmp_path, capsys):
    rec = _passing()
    del rec["batch_sweep"]["by_precision"]["bf16"]["points"][0]["batch"]
    rec["sku_to_preferred_precision"]["A100-40GB"] = {}
    rec["production_recommendation"]["oom_margin_pct"] = "18"
    rec["accuracy_gate"] = ["passed"]
    results = {c.name: c for c in check_recommendation(rec)}
    assert list(results) == ["batch_sweep", "precisions", "fp16_speedup", "drift_cosine", "combined_sweep",
                             "production", "verified", "sku_table", "accuracy_gate"]
    broken = {"batch_sweep", "sku_table", "production", "accuracy_gate"}
    assert {n for n, c in results.items() if not c.passed} == broken
    assert all("lacks or mistypes" in results[n].detail for n in broken)
    (tmp_path / "recommendation.json").write_text("[]")
    assert main([str(tmp_path)]) == 2 and "is not a recommendation" in capsys.readouterr().err


def test_a_measured_h200_counts_as_the_hopper_the_a100s_differ_from():
    rec = _passing()
    table = rec["sku_to_preferred_precision"]
    hopper = next(k for k, e in table.items() if k.startswith("H100") and e.get("basis") == "measured")
    table["H200"] = table.pop(hopper)  # the same figures, measured on an H200 instead
    results = {c.name: c for c in check_recommendation(rec)}
    assert results["sku_table"].passed and "H200" in results["sku_table"].detail
    table["H200"]["basis"] = "projected"  # nothing measured: unmet
    assert not {c.name: c for c in check_recommendation(rec)}["sku_table"].passed
