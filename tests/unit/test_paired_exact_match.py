"""The exact-match gate's paired rule (`paired_alpha`: servesweep.quality.gate.verdict) and
bench/paired_exact_match.py, whose committed paired.json docs/smollm2.md quotes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from servesweep.quality.gate.measure import Measurement
from servesweep.quality.gate.spec import GateSpec
from servesweep.quality.gate.verdict import GateSpecError, judge, paired_flips, paired_p_value

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("paired_exact_match", ROOT / "bench" / "paired_exact_match.py")
paired_exact_match = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_exact_match)


def measurement(correct: dict[str, bool], precision: str) -> Measurement:
    return Measurement(metric="exact_match", value=sum(correct.values()) / len(correct),
                       fingerprint={"metric": "exact_match"}, target={"precision": precision}, measured_at="",
                       samples=[{"id": task, "output": "", "correct": ok} for task, ok in correct.items()])


def spec(tmp_path: Path, **threshold: float) -> GateSpec:
    return GateSpec.model_validate({"metric": "exact_match", "threshold": threshold,
                                    "method": {"eval_set": str(tmp_path / "tasks.jsonl"), "eval_set_sha256": "0" * 64}})


# SmolLM2's fp8 on an H100 against fp32 (examples/h100-2026-12-07-smollm2): 154 of 180, then 11 lost, 2 gained.
REFERENCE = {f"t{i}": i < 154 for i in range(180)}
FP8 = {**REFERENCE, **{f"t{i}": False for i in range(11)}, "t170": True, "t171": True}


def test_flips_are_counted_both_ways():
    assert paired_flips(measurement(REFERENCE, "fp32"), measurement(FP8, "fp8")) == (11, 2)


def test_the_p_value_is_the_one_sided_exact_binomial_tail():
    assert paired_p_value(11, 2) == pytest.approx(92 / 8192)  # C(13,11)+C(13,12)+C(13,13) over 2^13
    assert paired_p_value(1, 1) == 0.75 and paired_p_value(0, 0) == 1.0


def test_the_limit_alone_passes_a_drop_at_the_limit_and_the_paired_rule_fails_it(tmp_path):
    ref, fp8 = measurement(REFERENCE, "fp32"), measurement(FP8, "fp8")
    assert judge(spec(tmp_path, max_drop_points=5.0), fp8, ref, "test").passed
    result = judge(spec(tmp_path, max_drop_points=5.0, paired_alpha=0.05), fp8, ref, "test")
    assert not result.passed and "lost 11, gained 2" in result.message and "significantly worse" in result.message


def test_rounding_noise_passes_the_paired_rule(tmp_path):
    noisy = {**REFERENCE, "t0": False, "t170": True}  # one lost, one gained: what bf16 did
    assert judge(spec(tmp_path, max_drop_points=5.0, paired_alpha=0.05), measurement(noisy, "bf16"),
                 measurement(REFERENCE, "fp32"), "test").passed


def test_paired_alpha_goes_with_exact_match_only(tmp_path):
    with pytest.raises(ValueError, match="paired_alpha"):
        GateSpec.model_validate({"metric": "perplexity", "threshold": {"max_relative_increase": 0.02, "paired_alpha": 0.05},
                                 "method": {"eval_set": str(tmp_path / "p.jsonl"), "eval_set_sha256": "0" * 64}})


def test_runs_over_different_tasks_are_refused():
    with pytest.raises(GateSpecError):
        paired_flips(measurement({"a": True}, "fp32"), measurement({"b": True}, "fp8"))


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/*/*/exact-match/paired.json")))
def test_a_committed_paired_file_is_what_its_gate_files_give(path, tmp_path, monkeypatch):
    out = tmp_path / "paired.json"
    monkeypatch.setattr("sys.argv", ["paired_exact_match.py", str(path.parent), "--out", str(out)])
    assert paired_exact_match.main() == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text())
