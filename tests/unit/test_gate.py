"""The accuracy gate without a server: spec validation, eval-set pinning, verdicts, reference files."""

import json
import shutil
from pathlib import Path

import pytest

from servesweep.cli import main
from servesweep.quality.gate.measure import Measurement, _prompt_token_logprobs, metric_value
from servesweep.quality.gate.spec import GateSpecError, file_sha256, load_eval_set, load_gate_spec
from servesweep.quality.gate.verdict import judge, read_reference
from servesweep.analysis.selection import combined_sweep
from servesweep.reports.render import gate_cell
from servesweep.results.recommendation import GateEntry

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def write_spec(tmp_path: Path, metric: str = "perplexity", threshold: dict | None = None, rows=None,
               **method) -> Path:
    rows = rows or [{"id": str(i), "text": f"x = {i}\n", "prompt": f"y = {i}", "answer": str(i)} for i in range(10)]
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    threshold = threshold or {"perplexity": {"max_relative_increase": 0.02}, "exact_match": {"max_drop_points": 1.0},
                              "greedy_agreement": {"min_agreement": 0.9}}[metric]
    spec = {"accuracy_gate": {"metric": metric, "threshold": threshold,
                              "method": {"eval_set": "eval.jsonl", "eval_set_sha256": file_sha256(eval_set)} | method}}
    path = tmp_path / "gate.yaml"
    path.write_text(json.dumps(spec))
    return path


def measurement(spec_path: Path, samples: list[dict], precision: str) -> Measurement:
    spec = load_gate_spec(spec_path)
    return Measurement(metric=spec.metric, value=metric_value(spec.metric, samples), fingerprint=spec.fingerprint(),
                       target={"url": "http://127.0.0.1:1", "model": "m", "precision": precision},
                       samples=samples, measured_at="now")


@pytest.mark.parametrize("name", ["gate-perplexity.yaml", "gate-exact-match.yaml", "gate-greedy-agreement.yaml"])
def test_shipped_specs_load_and_their_eval_sets_match_the_pinned_hash(name):
    spec = load_gate_spec(SCENARIOS / name)
    samples = load_eval_set(spec)
    assert len(samples) == spec.method.samples
    assert spec.method.reference_precision == "fp32"


@pytest.mark.parametrize("change,message", [
    ({"threshold": {"min_agreement": 0.9}}, "metric perplexity takes exactly one threshold key, max_relative_increase"),
    ({"threshold": {"max_relative_increase": 0.02, "max_drop_points": 1}}, "exactly one threshold key"),
    ({"metric": "bleu"}, "metric: Input should be 'perplexity', 'exact_match' or 'greedy_agreement'"),
    ({"extra": 1}, "extra: unknown field"),
])
def test_bad_spec_names_the_field(tmp_path, change, message):
    path = write_spec(tmp_path)
    raw = json.loads(path.read_text())
    raw["accuracy_gate"].update(change)
    path.write_text(json.dumps(raw))
    with pytest.raises(GateSpecError, match="gate spec .*gate.yaml") as exc:
        load_gate_spec(path)
    assert message in str(exc.value)


def test_eval_set_whose_hash_differs_from_the_spec_is_refused(tmp_path):
    spec = load_gate_spec(write_spec(tmp_path))
    with open(spec.method.eval_set, "a") as f:
        f.write(json.dumps({"text": "one more sample\n"}) + "\n")
    with pytest.raises(GateSpecError, match="has sha256 [0-9a-f]{64}, but the spec pins [0-9a-f]{64}"):
        load_eval_set(spec)


def test_eval_set_rows_must_carry_the_metrics_fields(tmp_path):
    spec = load_gate_spec(write_spec(tmp_path, "exact_match", rows=[{"prompt": "a"}]))
    with pytest.raises(GateSpecError, match=r"eval.jsonl:1: metric exact_match needs string field\(s\) \['answer'\]"):
        load_eval_set(spec)


def test_samples_are_a_seeded_subset(tmp_path):
    a = load_eval_set(load_gate_spec(write_spec(tmp_path, samples=4, seed=1)))
    b = load_eval_set(load_gate_spec(write_spec(tmp_path, samples=4, seed=1)))
    c = load_eval_set(load_gate_spec(write_spec(tmp_path, samples=4, seed=2)))
    assert a == b and len(a) == 4 and a != c
    with pytest.raises(GateSpecError, match="method.samples is 11 but eval set .* has 10"):
        load_eval_set(load_gate_spec(write_spec(tmp_path, samples=11)))


def ppl_samples(nll_per_token: float) -> list[dict]:
    return [{"id": "a", "nll_sum": nll_per_token * 100, "tokens": 100}, {"id": "b", "nll_sum": nll_per_token * 50,
                                                                         "tokens": 50}]


def test_perplexity_is_token_weighted_and_judged_relative_to_the_reference(tmp_path):
    import math

    path = write_spec(tmp_path)
    spec = load_gate_spec(path)
    ref = measurement(path, ppl_samples(math.log(100)), "fp32")
    assert ref.value == pytest.approx(100)
    ok = judge(spec, measurement(path, ppl_samples(math.log(101.9)), "bf16"), ref, "ref.json")
    bad = judge(spec, measurement(path, ppl_samples(math.log(102.1)), "fp8"), ref, "ref.json")
    assert (ok.status, ok.passed, ok.exit_code) == ("passed", True, 0)
    assert (bad.status, bad.passed, bad.exit_code) == ("failed", False, 1)
    assert bad.message == ("FAILED: perplexity 102.100 vs reference (fp32) 100.000: +2.10% (allowed at most +2.00%)")
    assert bad.reference_value == pytest.approx(100) and bad.value == pytest.approx(102.1)
    assert bad.precision == "fp8" and bad.metric == "perplexity" and bad.threshold == {"max_relative_increase": 0.02}


def test_exact_match_allows_a_drop_in_points(tmp_path):
    path = write_spec(tmp_path, "exact_match")
    spec = load_gate_spec(path)

    def run(correct: int) -> Measurement:
        return measurement(path, [{"id": str(i), "output": "", "correct": i < correct} for i in range(100)], "x")

    ref = run(50)
    assert judge(spec, run(49), ref, "r").passed  # -1.0 point, limit 1.0
    result = judge(spec, run(48), ref, "r")
    assert not result.passed and "-2.0 points (allowed drop at most 1.0 points)" in result.message


def test_greedy_agreement_counts_positions_and_missing_tokens_disagree(tmp_path):
    path = write_spec(tmp_path, "greedy_agreement")
    spec = load_gate_spec(path)
    ref = measurement(path, [{"tokens": list("abcdefghij")}], "fp32")
    same = judge(spec, measurement(path, [{"tokens": list("abcdefghij")}], "bf16"), ref, "r")
    shorter = judge(spec, measurement(path, [{"tokens": list("abcdefghi")}], "bf16"), ref, "r")
    diverged = judge(spec, measurement(path, [{"tokens": list("abcdexxxxx")}], "bf16"), ref, "r")
    assert (same.value, same.passed) == (1.0, True)
    assert (shorter.value, shorter.passed) == (0.9, True)
    assert (diverged.value, diverged.passed) == (0.5, False)


def test_measurements_taken_differently_are_not_compared(tmp_path):
    import math

    ref = measurement(write_spec(tmp_path, samples=2), ppl_samples(math.log(10)), "fp32")
    path = write_spec(tmp_path, samples=2, seed=5)
    with pytest.raises(GateSpecError, match="measured differently \\(seed differ\\)"):
        judge(load_gate_spec(path), measurement(path, ppl_samples(math.log(10)), "bf16"), ref, "r")
    other = ppl_samples(math.log(10))
    other[0]["tokens"] = 90  # a truncated context or another tokenizer
    ref = measurement(path, ppl_samples(math.log(10)), "fp32")
    with pytest.raises(GateSpecError, match="reference scored 100 tokens, this server 90"):
        judge(load_gate_spec(path), measurement(path, other, "bf16"), ref, "r")


def test_prompt_logprobs_are_read_from_vllm_and_openai_echo_shapes():
    vllm = {"prompt_token_ids": [0, 7, 9],
            "prompt_logprobs": [None, {"3": {"logprob": -0.1}, "7": {"logprob": -2.0}}, {"9": {"logprob": -1.0}}]}
    assert _prompt_token_logprobs(vllm) == [-2.0, -1.0]
    echo = {"logprobs": {"token_logprobs": [None, -0.5, -0.25, -3.0]}}
    assert _prompt_token_logprobs(echo) == [-0.5, -0.25, -3.0]
    assert _prompt_token_logprobs({"text": "x", "logprobs": None}) is None


def test_reference_files_round_trip_and_bad_ones_are_named(tmp_path):
    import math

    path = write_spec(tmp_path)
    m = measurement(path, ppl_samples(math.log(10)), "fp32")
    (tmp_path / "reference.json").write_text(m.model_dump_json())
    assert read_reference(tmp_path / "reference.json").value == pytest.approx(10)
    gate = judge(load_gate_spec(path), m, m, "r")
    (tmp_path / "gate.json").write_text(gate.model_dump_json())
    assert read_reference(tmp_path / "gate.json").samples == m.samples
    (tmp_path / "bad.json").write_text('{"metric": 3}')
    with pytest.raises(GateSpecError, match="bad.json is not a servesweep gate measurement"):
        read_reference(tmp_path / "bad.json")
    with pytest.raises(GateSpecError, match="missing.json does not exist"):
        read_reference(tmp_path / "missing.json")


def test_cli_exit_2_with_gate_json_when_the_eval_set_changed(tmp_path):
    spec_dir = tmp_path / "spec"
    shutil.copytree(SCENARIOS / "evalsets", spec_dir / "evalsets")
    shutil.copyfile(SCENARIOS / "gate-perplexity.yaml", spec_dir / "gate.yaml")
    with open(spec_dir / "evalsets" / "stdlib-heldout-perplexity.jsonl", "a") as f:
        f.write(json.dumps({"id": "new", "text": "import os\n"}) + "\n")
    out = tmp_path / "out"
    # No server is needed: the eval set is checked before anything is launched or contacted.
    code = main(["gate", "--spec", str(spec_dir / "gate.yaml"), "--backend", "vllm", "--model", "/nonexistent",
                 "--out", str(out)])
    assert code == 2
    result = json.loads((out / "gate.json").read_text())
    assert result["status"] == "error" and result["passed"] is False and result["value"] is None
    assert "but the spec pins 063e54eb" in result["message"]


def test_cli_needs_a_reference_when_attached(tmp_path, stub_server):
    stub = stub_server()
    code = main(["gate", "--spec", str(SCENARIOS / "gate-perplexity.yaml"), "--url", stub.url, "--out", str(tmp_path)])
    assert code == 2
    assert "no reference: with --url give --reference" in json.loads((tmp_path / "gate.json").read_text())["message"]


def test_cli_unreachable_server_is_not_measured(tmp_path):
    from servesweep.backends.process import free_port

    # A valid stored reference, so the only thing that can stop the measurement is the dead URL.
    ref = tmp_path / "ref.json"
    samples = [{"id": str(i), "nll_sum": 2.0, "tokens": 10} for i in range(3)]
    ref.write_text(measurement(SCENARIOS / "gate-perplexity.yaml", samples, "fp32").model_dump_json())
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["gate", "--spec", str(SCENARIOS / "gate-perplexity.yaml"), "--url", url,
                 "--reference", str(ref), "--out", str(tmp_path / "o")])
    assert code == 2
    result = json.loads((tmp_path / "o" / "gate.json").read_text())
    assert result["status"] == "error" and f"cannot reach {url}" in result["message"]


def test_cli_broken_spec_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "g.yaml"
    bad.write_text("accuracy_gate: [1, 2")
    assert main(["gate", "--spec", str(bad), "--url", "http://127.0.0.1:9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"servesweep: error: gate spec {bad}: not valid YAML or JSON" in err


def test_report_cell_and_recommendation_respect_the_gate():
    import pandas as pd

    assert gate_cell(GateEntry(status="passed", passed=True, metric="perplexity", value=10.1,
                               reference_value=10.0)) == "pass: ppl 10.100 (+1.00%)"
    assert gate_cell(GateEntry(status="failed", passed=False, metric="exact_match", value=0.4,
                               reference_value=0.5)) == "FAIL: 40.0% exact (-10.0 pts)"
    assert gate_cell(GateEntry(status="error", passed=False, metric="perplexity", value=None)) == "not measured"
    df = pd.DataFrame([
        {"config": "fp32", "level": "c8", "precision": "fp32", "batch": 8, "goodput": 1.0, "output_token_throughput": 100.0,
         "meets_slo": True, "memory_needed_bytes": 1.0, "memory_at_load_bytes": 1.0, "device_mem_peak_bytes": None, "status": "ok"},
        {"config": "fp8", "level": "c8", "precision": "fp8", "batch": 8, "goodput": 2.0, "output_token_throughput": 200.0,
         "meets_slo": True, "memory_needed_bytes": 1.0, "memory_at_load_bytes": 1.0, "device_mem_peak_bytes": None, "status": "ok"},
    ])
    assert combined_sweep(df, None).best_config["precision"] == "fp8"
    gated = combined_sweep(df, None, {"fp8"})
    assert gated.best_config["precision"] == "fp32" and gated.excluded_by_accuracy_gate == ["fp8"]
