"""The accuracy gate under load without a server: the spec's `under_load`, which load each
configuration is measured under, verdicts against the UNLOADED reference, the recommendation
leaving out a precision that fails under load, and the report showing both numbers."""

import io
import json
import math

import pytest
from rich.console import Console

from servesweep.loadgen.records import ERROR_CANCELLED, RequestRecord
from servesweep.loadgen.stats import SLO
from servesweep.quality.gate.measure import Measurement, metric_value
from servesweep.quality.gate.spec import GateSpecError, UnderLoad, file_sha256, load_gate_spec
from servesweep.quality.gate.under_load import (
    LoadEvidence,
    UnderLoadMeasurement,
    background_level,
    load_evidence,
    under_load_verdict,
)
from servesweep.quality.gate.verdict import judge
from servesweep.analysis.selection import combined_sweep, gate_exclusions, gate_passed_by_precision
from servesweep.reports.render import gate_cell, write_report
from servesweep.results import GATE_MEASUREMENT_FILE, GATE_UNDER_LOAD_MEASUREMENT_FILE, append_point
from servesweep.results.recommendation import GateEntry
from servesweep.scenarios.schema import LoadSpec, Scenario
from servesweep.sweep.gate_load import choose_gate_load
from servesweep.scenarios.search import LadderConfig
from servesweep.sweep.ladder import ConcurrencyLadder, RateSearch
from servesweep.sweep.observation import Observation
from servesweep.sweep.sweep_runner import SweepRunner
from tests_support import point, typed


def write_spec(tmp_path, under_load=None):
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text("".join(json.dumps({"id": str(i), "text": f"x = {i}\n"}) + "\n" for i in range(4)))
    gate = {"metric": "perplexity", "threshold": {"max_relative_increase": 0.02},
            "method": {"eval_set": "eval.jsonl", "eval_set_sha256": file_sha256(eval_set)}}
    if under_load is not None:
        gate["under_load"] = under_load
    path = tmp_path / "gate.yaml"
    path.write_text(json.dumps({"accuracy_gate": gate}))
    return path


def ppl(spec, perplexity, precision):
    """A perplexity measurement of 4 samples x 10 tokens whose value is `perplexity`."""
    samples = [{"id": str(i), "nll_sum": 10 * math.log(perplexity), "tokens": 10} for i in range(4)]
    return Measurement(metric="perplexity", value=metric_value("perplexity", samples), fingerprint=spec.fingerprint(),
                       target={"url": "http://127.0.0.1:1", "model": "m", "precision": precision},
                       samples=samples, measured_at="now")


def evidence(label="c8", **kw):
    return LoadEvidence(level={"concurrency": 8}, label=label, source="the search's recommended concurrency",
                        concurrency=8, load_start_s=0.0, load_end_s=5.0, gate_start_s=1.0, gate_end_s=4.0,
                        requests_overlapping=20, in_flight_mean=7.9, completed_during=12, output_tok_s_during=800.0,
                        running_batch_mean=14.5, **kw)


# --- the spec ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [(None, None), (False, None), (True, UnderLoad()),
                                            ({"concurrency": 8}, UnderLoad(concurrency=8)), ({}, UnderLoad())])
def test_under_load_forms(tmp_path, value, expected):
    spec = load_gate_spec(write_spec(tmp_path, value))
    assert spec.under_load == expected
    assert "under_load" not in spec.fingerprint()  # under load is compared with the unloaded reference


@pytest.mark.parametrize("value,message", [
    (8, "under_load: expected true, false or {concurrency: N}, got 8"),
    ("yes", "under_load: expected true, false or {concurrency: N}, got 'yes'"),
    ({"concurrency": 0}, "under_load.concurrency: Input should be greater than or equal to 1"),
    ({"concurrency": "8"}, "under_load.concurrency: Input should be a valid integer"),
    ({"rate": 2}, "under_load.rate: unknown field"),
])
def test_bad_under_load_is_a_one_line_error_naming_the_field(tmp_path, value, message):
    path = write_spec(tmp_path, value)
    with pytest.raises(GateSpecError) as exc:
        load_gate_spec(path)
    assert str(exc.value) == f"gate spec {path}: {message}"


# --- which load ------------------------------------------------------------------------------
LOAD = LoadSpec(concurrency=[1, 4, 16], num_requests=32)


def test_the_spec_concurrency_wins_over_everything():
    level, source = choose_gate_load(UnderLoad(concurrency=8), LOAD, typed(point("bf16", 16, 1600.0)))
    assert (level.concurrency, level.label, source) == (8, "c8", "the gate spec's concurrency")


def test_adaptive_concurrency_takes_the_ladders_recommendation_not_the_best_goodput():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=64))
    # Throughput flattens after 2: the knee is at 2, although 4 has slightly more goodput.
    for c, tput in ((1, 100.0), (2, 190.0), (4, 200.0)):
        assert ladder.next_level() == c
        ladder.record(c, Observation(output_tok_s=tput, request_goodput=tput / 100))
    assert ladder.recommended_concurrency == 2
    level, source = choose_gate_load(UnderLoad(), LoadSpec(concurrency="auto"), [], ladder)
    assert (level.concurrency, source) == (2, "the search's recommended concurrency")


def test_rate_search_takes_its_best_rate():
    search = RateSearch()
    rate = search.next_level()
    search.record(rate, Observation(output_tok_s=100.0, request_goodput=rate))
    level, source = choose_gate_load(UnderLoad(), LoadSpec(request_rate="auto"), [], search)
    assert (level.request_rate, level.concurrency, source) == (rate, None, "the search's best rate")


def test_fixed_levels_take_the_best_goodput_among_points_that_meet_the_slos():
    points = typed(point("bf16", 1, 100.0), point("bf16", 4, 400.0), point("bf16", 16, 1600.0, ttft_p99=5000.0),
                   point("bf16", 64, 0.0, status="failed", cause="out of memory"))
    level, source = choose_gate_load(UnderLoad(), LOAD, points, slo=SLO(ttft_ms=1000))
    assert level.concurrency == 4 and source == "the level with the best goodput"
    # Without SLOs, the best request throughput.
    level, source = choose_gate_load(UnderLoad(), LOAD, points)
    assert level.concurrency == 16 and source == "the level with the best request throughput"
    # No level meets the SLOs: the best of the rest, said so.
    level, source = choose_gate_load(UnderLoad(), LOAD, points, slo=SLO(ttft_ms=10))
    assert level.concurrency == 16 and "no level met the SLOs" in source
    assert level.num_requests == 32  # the scenario's level; the measurement bounds it by time instead
    assert background_level(level).num_requests is None and background_level(level).warmup_requests == 0


def test_no_ok_point_means_no_load_and_says_why():
    level, cause = choose_gate_load(UnderLoad(), LOAD, typed(point("bf16", 1, 0.0, status="failed", cause="oom")))
    assert level is None and "no ok load level" in cause


# --- the load's evidence ---------------------------------------------------------------------
def test_load_evidence_counts_what_ran_inside_the_window():
    def rec(start, end, chunks=(), error=None):
        return RequestRecord(request_id=0, level="c2", warmup=False, scheduled_s=start, sent_s=start, end_s=end,
                             chunk_arrivals_s=list(chunks), error_kind=error)

    records = [rec(0.0, 1.5, [0.5, 1.0, 1.5]),  # ends inside the window
               rec(1.5, 3.5, [2.0, 2.5, 3.0, 3.5]),  # in flight across the window's end
               rec(0.0, 0.9, [0.5]),  # before the window
               rec(1.2, 1.8, error="http_error"),  # failed inside
               rec(2.5, 3.5, [], error=ERROR_CANCELLED)]  # cancelled when the load stopped
    e = load_evidence(records, 1.0, 3.0)
    assert e["requests_overlapping"] == 4 and e["completed_during"] == 1 and e["failed_during"] == 1
    assert e["in_flight_mean"] == pytest.approx((0.5 + 1.5 + 0.6 + 0.5) / 2.0)
    assert e["output_tokens_during"] == 5 and e["output_tok_s_during"] == pytest.approx(2.5)


# --- verdicts --------------------------------------------------------------------------------
def test_under_load_is_judged_against_the_unloaded_reference(tmp_path):
    spec = load_gate_spec(write_spec(tmp_path, True))
    ref = ppl(spec, 100.0, "fp32")
    ok = under_load_verdict(spec, UnderLoadMeasurement(status="measured", precision="bf16", load=evidence(),
                                                       measurement=ppl(spec, 101.5, "bf16")), ref, "fp32", "bf16")
    bad = under_load_verdict(spec, UnderLoadMeasurement(status="measured", precision="fp8", load=evidence(),
                                                        measurement=ppl(spec, 102.5, "fp8")), ref, "fp32", "fp8")
    assert (ok.status, ok.passed, ok.reference_value) == ("passed", True, pytest.approx(100.0))
    assert (bad.status, bad.passed, bad.exit_code) == ("failed", False, 1)
    assert bad.message == ("FAILED under load (c8): perplexity 102.500 vs reference (fp32) 100.000: +2.50% "
                           "(allowed at most +2.00%) (reference measured unloaded)")
    assert bad.load.completed_during == 12
    gone = under_load_verdict(spec, UnderLoadMeasurement(status="not_measured", precision="fp8", load=evidence(),
                                                         cause="the load's first request failed (http_error: x)"),
                              ref, "fp32", "fp8")
    assert (gone.status, gone.passed, gone.exit_code) == ("error", False, 2)
    assert gone.message == "not measured: under load (c8): the load's first request failed (http_error: x)"


def _scenario(tmp_path, spec_path, load=None):
    return Scenario.model_validate({"name": "t", "model": "/m", "accuracy_gate": str(spec_path),
                                    "load": load or {"concurrency": [1, 4], "num_requests": 8},
                                    "sweep": {"precision": ["fp32", "bf16"]}})


def test_sweep_verdicts_use_the_reference_precisions_unloaded_measurement(tmp_path):
    spec_path = write_spec(tmp_path, True)
    spec = load_gate_spec(spec_path)
    out = tmp_path / "out"
    for precision, unloaded, loaded in (("fp32", 100.0, 150.0), ("bf16", 100.5, 101.0)):
        d = out / "configs" / precision
        d.mkdir(parents=True)
        (d / GATE_MEASUREMENT_FILE).write_text(ppl(spec, unloaded, precision).model_dump_json())
        (d / GATE_UNDER_LOAD_MEASUREMENT_FILE).write_text(UnderLoadMeasurement(
            status="measured", precision=precision, load=evidence(),
            measurement=ppl(spec, loaded, precision)).model_dump_json())
    runner = SweepRunner(_scenario(tmp_path, spec_path), spec_path, out, Console(file=io.StringIO()))
    runner.gate.verdicts()
    fp32 = json.loads((out / "configs/fp32/gate-under-load.json").read_text())
    bf16 = json.loads((out / "configs/bf16/gate-under-load.json").read_text())
    # bf16 under load (101) vs fp32 UNLOADED (100): +1 %, passes; against fp32 under load (150) it would not read so.
    assert bf16["passed"] is True and bf16["reference_value"] == pytest.approx(100.0)
    assert bf16["value"] == pytest.approx(101.0) and bf16["load"]["label"] == "c8"
    assert fp32["passed"] is False and "+50.00%" in fp32["message"]
    # gate.json keeps the unloaded verdicts.
    assert json.loads((out / "configs/bf16/gate.json").read_text())["value"] == pytest.approx(100.5)
    # Resume: both measurements are on disk, so no server is needed for the gate.
    assert not runner.gate.load_pending(out / "configs" / "bf16")
    assert runner.gate.load_pending(out / "configs" / "fp16")


# --- the recommendation and the report -------------------------------------------------------
def _gate_entry(precision, status="passed", status_under_load="passed"):
    return GateEntry(**{"precision": precision, "status": status, "passed": status == "passed", "message": f"{status.upper()}: x",
            "status_under_load": status_under_load, "passed_under_load": status_under_load == "passed",
            "message_under_load": f"{status_under_load.upper()} under load (c8): y"})


def test_failing_under_load_excludes_the_precision_and_says_why():
    gates = [_gate_entry("fp32"), _gate_entry("bf16", status_under_load="failed"),
             _gate_entry("fp16", status_under_load="error")]
    reasons = gate_exclusions(gates)
    assert list(reasons) == ["bf16"] and "under load" in reasons["bf16"] and "FAILED under load (c8): y" in reasons["bf16"]
    # An under-load verdict that could not be measured neither vetoes nor clears.
    assert gate_passed_by_precision(gates) == {"fp32": True, "bf16": False, "fp16": True}
    import pandas as pd

    df = pd.DataFrame([{"config": p, "level": "c8", "precision": p, "batch": 8, "goodput": g,
                        "output_token_throughput": 100.0 * g, "meets_slo": True, "memory_needed_bytes": 1.0,
                        "device_mem_peak_bytes": None, "status": "ok"} for p, g in (("fp32", 1.0), ("bf16", 2.0))])
    comb = combined_sweep(df, None, reasons)
    assert comb.best_config["precision"] == "fp32" and comb.excluded_by_accuracy_gate == ["bf16"]
    assert comb.accuracy_gate_exclusions["bf16"] == reasons["bf16"]


def test_report_shows_both_numbers_per_precision(tmp_path):
    spec_path = write_spec(tmp_path, True)
    spec = load_gate_spec(spec_path)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "scenario.json").write_text(json.dumps({"name": "synthetic", "slo": None}))
    for p in [point("fp32", c, 100.0 * c) for c in (1, 4)] + [point("bf16", c, 200.0 * c) for c in (1, 4)]:
        append_point(out, p)
    ref = ppl(spec, 100.0, "fp32")
    for precision, unloaded, loaded in (("fp32", 100.0, 100.2), ("bf16", 101.0, 103.0)):
        d = out / "configs" / precision
        d.mkdir(parents=True)
        (d / "gate.json").write_text(judge(spec, ppl(spec, unloaded, precision), ref, "fp32").model_dump_json())
        (d / "gate-under-load.json").write_text(under_load_verdict(
            spec, UnderLoadMeasurement(status="measured", precision=precision, load=evidence(),
                                       measurement=ppl(spec, loaded, precision)), ref, "fp32", precision
        ).model_dump_json())
    paths = write_report(out)
    rec = json.loads(paths["json"].read_text())
    gates = {g["precision"]: g for g in rec["accuracy_gate"]}
    assert gates["bf16"]["value"] == pytest.approx(101.0) and gates["bf16"]["passed"] is True
    assert gates["bf16"]["value_under_load"] == pytest.approx(103.0) and gates["bf16"]["passed_under_load"] is False
    assert gates["fp32"]["passed_under_load"] is True and gates["bf16"]["load_under_load"]["concurrency"] == 8
    assert "measurement" not in gates["bf16"]  # per-sample data stays in the files
    # bf16 has twice the throughput but failed under load: the recommendation is fp32, and says why.
    assert rec["production_recommendation"]["precision"] == "fp32"
    assert rec["combined_sweep"]["excluded_by_accuracy_gate"] == ["bf16"]
    md = paths["md"].read_text()
    section = md.split("## Accuracy gate", 1)[1].split("\n## ", 1)[0]
    assert "| config | precision | unloaded | under load | load during the measurement |" in section
    assert ("| bf16 | bf16 | pass: ppl 101.000 (+1.00%) | FAIL: ppl 103.000 (+3.00%) | c8 (the search's recommended "
            "concurrency), 7.9 in flight, 12 completed, 800 output tok/s, running batch 14.5 |") in section
    assert "bf16 excluded from the recommendation: failed the accuracy gate under load" in section
    assert "Excluded by the accuracy gate: **bf16**" in md
    assert gate_cell(GateEntry.model_validate(gates["bf16"])) == "pass: ppl 101.000 (+1.00%); under load FAIL: ppl 103.000 (+3.00%)"
    html = paths["html"].read_text()
    assert "<th>under load</th>" in html and "FAIL: ppl 103.000 (+3.00%)" in html


def test_gate_command_needs_a_concurrency_for_under_load_true(tmp_path):
    from servesweep.cli import main

    spec = write_spec(tmp_path, True)
    code = main(["gate", "--spec", str(spec), "--url", "http://127.0.0.1:9", "--reference", str(tmp_path / "r.json"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    message = json.loads((tmp_path / "o" / "gate.json").read_text())["message"]
    assert "under_load: true means a sweep's recommended load" in message and "--under-load N" in message
