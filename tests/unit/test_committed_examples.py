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
    # 2026-12-07 (issue 34): the shipped H100 scenario's bf16 and fp8 ladders only (the blind test of
    # the projection and the headroom; device time did not cover fp16/fp32), dummy weights, no
    # quality sweep beside it.
    "h100-2026-12-07": {"precisions", "combined_sweep", "accuracy_gate", "drift_cosine", "fp16_speedup"},
    # 2026-12-07 (issue 34 step 5): the H200 scenario's bf16 and fp8 ladders and verification run again
    # (the reproduction asked for): no fp16/fp32, no quality sweep; the bf16 ladder stopped at the
    # SLO (c64) before its knee.
    "h200-2026-12-07": {"batch_sweep", "precisions", "combined_sweep", "accuracy_gate", "drift_cosine",
                        "fp16_speedup"},
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


# --- The committed results against their raw data (issue 36) -------------------------------------
# recommendation.json re-derived from points.jsonl (and the files beside it) by the report's own
# code, and verification.json from the runs under verification/, so a committed recommendation
# that its raw data does not support fails here, not only one whose own fields disagree.

SWEEP_DIRS = sorted(p.parent for p in EXAMPLES.rglob("recommendation.json"))
NOT_DERIVED = {"generated_at", "generated_by"}  # when and by which version, not what
# Projected SKU figures made with a rule since superseded keep naming it (README, "SKU table");
# they are recomputed with it by `servesweep project`, not by the report, so they are not compared.
SUPERSEDED_RULES = {"decode-bandwidth"}


def _differences(stored, derived, path: str) -> list[str]:
    """Where `stored` disagrees with `derived`. A field the stored file lacks (written before the
    field existed) is not a disagreement; every value it holds must be the derived one."""
    if stored is None:
        return []
    if isinstance(stored, dict) and stored.get("rule_id") in SUPERSEDED_RULES:
        return []
    if isinstance(stored, dict) and isinstance(derived, dict):
        return [d for k, v in stored.items() for d in _differences(v, derived.get(k), f"{path}.{k}")]
    if isinstance(stored, list) and isinstance(derived, list) and len(stored) == len(derived):
        return [d for i, (a, b) in enumerate(zip(stored, derived)) for d in _differences(a, b, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(stored, numbers) and isinstance(derived, numbers) and not isinstance(stored, bool):
        return [] if stored == pytest.approx(derived, rel=1e-9, abs=1e-12) else [f"{path}: {stored} != {derived}"]
    return [] if stored == derived else [f"{path}: {stored!r} != {derived!r}"]


def recommendation_disagreements(sweep: Path) -> list[str]:
    """recommendation.json against the recommendation the report derives from the sweep's raw files."""
    from servesweep.analysis.recommend import analyse

    stored = json.loads((sweep / "recommendation.json").read_text())
    derived = json.loads(analyse(sweep)[1].model_dump_json())
    return [d for k, v in stored.items() if k not in NOT_DERIVED for d in _differences(v, derived.get(k), k)]


def _observed(run_dir: Path, percentile: int):
    """A verification run's figures from its own summary.json, as servesweep.sweep.verify_run takes them."""
    from servesweep.results import read_summary
    from servesweep.sweep.observation import Observation

    return Observation.from_summary(read_summary(run_dir / "summary.json"), "ok", percentile)


def verification_disagreements(sweep: Path) -> list[str]:
    """verification.json against its attempts' runs (verification/attempt-N/{traffic,stress}/) judged
    again by servesweep.sweep.verify_plan.judge, and the recommendation's copy of it."""
    from servesweep.scenarios.schema import SLOSpec
    from servesweep.sweep.verify_plan import judge

    path = sweep / "verification.json"
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    slo_data = json.loads((sweep / "scenario.json").read_text()).get("slo")
    slo = SLOSpec(**slo_data) if slo_data else None
    percentile = slo.percentile if slo else 99
    out = []
    for n, attempt in enumerate(stored["attempts"], 1):
        runs = {run: _observed(sweep / "verification" / f"attempt-{n}" / run, percentile)
                for run in ("traffic", "stress")}
        for run, obs in runs.items():
            out += _differences(attempt[run], json.loads(json.dumps(obs.to_dict())), f"attempts[{n - 1}].{run}")
        judged = judge(runs["traffic"], runs["stress"], slo)
        out += _differences(attempt["passed"], judged.passed, f"attempts[{n - 1}].passed")
        out += _differences([[c["run"], c["check"], c["ok"]] for c in attempt["checks"]],
                            [[c.run, c.check, c.ok] for c in judged.checks], f"attempts[{n - 1}].checks")
    if stored["attempts"]:
        out += _differences(stored["passed"], stored["attempts"][-1]["passed"], "passed (the last attempt's)")
    rec = json.loads((sweep / "recommendation.json").read_text()).get("production_recommendation") or {}
    out += _differences(rec.get("verification"), stored, "recommendation.production_recommendation.verification")
    if stored["attempts"] and rec:
        out += _differences(rec.get("verified"), stored["passed"], "recommendation.verified")
        out += _differences(rec.get("oom_margin_pct"), stored["attempts"][-1]["stress"]["oom_margin_pct"],
                            "recommendation.oom_margin_pct (the stress run's)")
    return out


def _name(sweep: Path) -> str:
    return str(sweep.relative_to(EXAMPLES))


@pytest.mark.parametrize("sweep", SWEEP_DIRS, ids=_name)
def test_committed_recommendation_is_what_its_points_give(sweep, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)  # the report writes the results' paths relative to the working directory
    assert recommendation_disagreements(sweep) == []


@pytest.mark.parametrize("sweep", SWEEP_DIRS, ids=_name)
def test_committed_verification_is_what_its_runs_give(sweep):
    assert verification_disagreements(sweep) == []


def test_the_committed_sweeps_include_a_verified_one():
    assert any((s / "verification" / "attempt-1" / "stress" / "summary.json").exists() for s in SWEEP_DIRS)


def _doctorable_copy(tmp_path: Path) -> Path:
    """The H200 example (its sweep and the quality sweep it takes drift and the gate from), logs left
    out, at the same path relative to the working directory (the report writes paths that way)."""
    import shutil

    root = tmp_path / "examples" / "h200-2026-12-02"
    shutil.copytree(EXAMPLES / "h200-2026-12-02", root, ignore=shutil.ignore_patterns("*.log", "logs", "*.html", "*.png"))
    return root / "sweep"


def test_a_doctored_recommendation_or_verification_fails_the_check(tmp_path, monkeypatch):
    sweep = _doctorable_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert recommendation_disagreements(sweep) == [] and verification_disagreements(sweep) == []
    rec_path = sweep / "recommendation.json"
    original = rec_path.read_text()
    rec = json.loads(original)
    # The recommended level moved to the neighbouring rung, its figures left alone: self-consistent
    # enough for the criteria, unsupported by points.jsonl.
    rec["production_recommendation"]["based_on"]["level"] = "c64"
    rec_path.write_text(json.dumps(rec))
    assert any("based_on.level" in d for d in recommendation_disagreements(sweep))
    rec = json.loads(original)
    rec["production_recommendation"]["expected"]["output_token_throughput"] *= 1.05  # a figure nudged by 5 %
    rec_path.write_text(json.dumps(rec))
    assert any("expected.output_token_throughput" in d for d in recommendation_disagreements(sweep))
    rec_path.write_text(original)
    ver_path = sweep / "verification.json"
    ver = json.loads(ver_path.read_text())
    ver["attempts"][0]["stress"]["oom_margin_pct"] = 22.5  # the margin aimed at, not the one measured
    ver_path.write_text(json.dumps(ver))
    found = verification_disagreements(sweep)
    assert any("attempts[0].stress.oom_margin_pct" in d for d in found)
    assert any("production_recommendation.verification" in d for d in found)
