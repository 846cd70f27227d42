"""The committed SKU table (examples/h100-llama3-8b) and H200 prediction (examples/h200-prediction):
every projected figure names its rule and source, and measured and projected SKUs stay apart."""

import hashlib
import json
from pathlib import Path

import pytest

from servesweep.analysis.measurement import load_measurement
from servesweep.reports.projection import Prediction
from servesweep.analysis.skus import RULES, SKUS, measured_figures, project

ROOT = Path(__file__).resolve().parents[2]
H100_DIR = ROOT / "examples" / "h100-llama3-8b"
PREDICTION_DIR = ROOT / "examples" / "h200-prediction"


def _check_figure(fig: dict, basis: str, source_file: str) -> None:
    assert fig["basis"] == basis
    assert isinstance(fig["source"], str) and source_file in fig["source"]
    if basis == "projected":
        assert fig["rule_id"] in RULES, fig
        assert isinstance(fig["rule"], str) and fig["rule"].startswith(fig["rule_id"] + ": ") and fig["applied"]
        assert "datasheet" in fig["source"]
    else:
        assert fig["rule_id"] is None and fig["rule"] is None


@pytest.fixture(scope="module")
def table() -> dict:
    return json.loads((H100_DIR / "recommendation.json").read_text())["sku_to_preferred_precision"]


def test_every_figure_of_the_committed_sku_table_names_its_rule_and_source(table):
    checked = 0
    for name, entry in table.items():
        for precision, figures in entry["figures"].items():
            for metric, fig in figures.items():
                assert (fig["metric"], fig["precision"]) == (metric, precision)
                _check_figure(fig, entry["basis"], "examples/h100-llama3-8b/points.jsonl")
                checked += 1
    assert checked >= 8 * 3 * 4  # every SKU, at least three precisions, four metrics


def test_a100_is_projected_bf16_and_h100_measured(table):
    for name in ("A100-40GB", "A100-80GB"):
        assert (table[name]["precision"], table[name]["basis"]) == ("bf16", "projected")
        assert "fp8" not in table[name]["figures"] and table[name]["figures"]["bf16"]
    assert table["H100-SXM"]["basis"] == "measured"
    assert [n for n, e in table.items() if e["basis"] == "measured"] == ["H100-SXM"]


def test_the_committed_h200_prediction_names_rules_sources_and_what_it_came_from():
    pred = Prediction.model_validate_json((PREDICTION_DIR / "prediction.json").read_text())
    assert (pred.target_sku, pred.basis, pred.measured_sku) == ("H200", "projected", "H100-SXM")
    assert pred.made_at.startswith("2026-11-23") and pred.results_dir == "examples/h100-llama3-8b"
    for precision, figures in pred.figures.items():
        assert set(figures) == {"output_tok_s_at_knee", "tpot_p50_ms_c1", "ttft_p50_ms_at_knee", "kv_pool_tokens"}
        for fig in figures.values():
            _check_figure(fig.model_dump(), "projected", "examples/h100-llama3-8b/points.jsonl")
            assert fig.value is not None
    for f in pred.source_files:
        # When the H100 results are rerun (issue 16), this fails until the prediction is redone from them.
        digest = hashlib.sha256((ROOT / f.path).read_bytes()).hexdigest()
        assert digest == f.sha256, f"{f.path} changed since the prediction"
    md = (PREDICTION_DIR / "prediction.md").read_text()
    for words in ("projected, not measured", "before any H200 measurement", "Dummy weights", "issue 16"):
        assert words in md, words


def _same_numbers(committed: dict, fresh: dict, where: str) -> int:
    """The numbers of two figure tables (precision -> metric -> figure) agree; returns how many were compared."""
    assert set(committed) == set(fresh), where
    n = 0
    for precision, figures in fresh.items():
        assert set(committed[precision]) == set(figures), (where, precision)
        for metric, fig in figures.items():
            got = committed[precision][metric]
            label = (where, precision, metric)
            assert (got["value"] is None) == (fig.value is None), label
            if fig.value is not None:
                assert got["value"] == pytest.approx(fig.value, rel=1e-9), label
            assert (got["batch"], got["rule_id"], got["applied"]) == (fig.batch, fig.rule_id, fig.applied), label
            n += 1
    return n


def _recorded_rules(figures: dict) -> dict[str, str]:
    """metric -> the rule id the committed figures name (one per metric across precisions)."""
    rules: dict[str, set[str]] = {}
    for per in figures.values():
        for metric, fig in per.items():
            rules.setdefault(metric, set()).add(fig["rule_id"])
    assert all(len(ids) == 1 for ids in rules.values()), rules
    return {metric: ids.pop() for metric, ids in rules.items()}


def test_the_committed_figures_are_what_the_rules_give_from_the_committed_results(table):
    # Names and sources are checked above; this recomputes every number from the committed points
    # with the rule each figure names, so a hand edit of a committed figure or a change of a rule's
    # arithmetic shows here. Figures made before issue 23 name the superseded decode-bandwidth.
    meas = load_measurement(H100_DIR)
    pred = json.loads((PREDICTION_DIR / "prediction.json").read_text())
    rules = _recorded_rules(pred["figures"])
    assert rules["output_tok_s_at_knee"] == "decode-bandwidth"  # what was predicted before the H200 run
    checked = _same_numbers(pred["figures"], project(meas, SKUS["H200"], rules), "prediction")
    checked += _same_numbers(pred["measured_figures"], measured_figures(meas), "prediction (measured)")
    for name, entry in table.items():
        fresh = (measured_figures(meas) if entry["basis"] == "measured"
                 else project(meas, SKUS[name], _recorded_rules(entry["figures"])))
        checked += _same_numbers(entry["figures"], fresh, name)
    assert checked >= 2 * 16 + 8 * 12


def test_the_committed_h200_prediction_under_the_revised_rule_against_the_h200_run():
    # The same H100 figures through decode-roofline (issue 23): x 1.12 at the H100's knee, batch 128.
    meas = load_measurement(H100_DIR)
    fresh = project(meas, SKUS["H200"])
    for precision in ("bf16", "fp8"):
        fig = fresh[precision]["output_tok_s_at_knee"]
        assert (fig.rule_id, fig.batch) == ("decode-roofline", 128)
        assert fig.value == pytest.approx(meas.by_precision[precision].output_tok_s_at_knee * 1.12)


H100_FROM_H200 = ROOT / "examples" / "h100-from-h200"


def test_the_committed_h100_from_h200_prediction_is_what_the_revised_rules_give():
    pred = json.loads((H100_FROM_H200 / "prediction.json").read_text())
    assert (pred["target_sku"], pred["measured_sku"], pred["basis"]) == ("H100-SXM", "H200", "projected")
    assert pred["figures"]["bf16"]["output_tok_s_at_knee"]["rule_id"] == "decode-roofline"
    for f in pred["source_files"]:
        assert hashlib.sha256((ROOT / f["path"]).read_bytes()).hexdigest() == f["sha256"], f["path"]
    meas = load_measurement(ROOT / "examples" / "h200-2026-12-02" / "sweep")
    checked = _same_numbers(pred["figures"], project(meas, SKUS["H100-SXM"], _recorded_rules(pred["figures"])),
                            "h100-from-h200")
    assert checked == 16  # four precisions (fp16 and fp32 from the second H200 session) x 4 figures
    for per in pred["figures"].values():
        for fig in per.values():
            _check_figure(fig, "projected", "examples/h200-2026-12-02/sweep/points.jsonl")
    md = (H100_FROM_H200 / "README.md").read_text()
    for words in ("projected", "first visible text", "not a test of"):
        assert words in md, words
