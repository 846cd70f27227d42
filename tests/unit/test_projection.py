"""Projection rules, the SKU table with several measured SKUs, predictions and their comparison
with a measurement, and the `project` command's errors; on synthetic sweeps with hand-computed answers."""

import datetime as dt
import hashlib
import json

import pytest

from servesweep.cli import main
from servesweep.errors import ConfigError, ReportError
from servesweep.analysis.measurement import load_measurement
from servesweep.reports.projection import compare, predict, read_prediction, write_prediction
from servesweep.analysis.recommend import analyse
from servesweep.analysis.skus import (
    DECODE_MEMORY_SHARE,
    RULES,
    SKUS,
    PrecisionMeasurement,
    SkuMeasurement,
    current_rules,
    decode_bandwidth,
    decode_roofline,
    decode_roofline_terms,
    kv_pool_memory,
    memory_share,
    preferred_precision,
    prefill_compute,
    project,
    sku_table,
    tpot_bandwidth,
)
from servesweep.results import append_point

H100, H200, A100, L4 = SKUS["H100-SXM"], SKUS["H200"], SKUS["A100-80GB"], SKUS["L4"]
SCENARIO = {"name": "synthetic", "model": "/nonexistent", "served_model_name": "m", "load_format": "dummy",
            "workload": {"input_len": 512, "output_len": 128}, "load": {"concurrency": [1, 2, 4, 8, 16]}}


def _point(gpu, precision, conc, tput, ttft, tpot, pool_tokens, pool_bytes, total, fraction=0.5):
    return {"config": f"{precision}-gmu{fraction}",
            "config_spec": {"model": "/nonexistent", "precision": precision, "max_num_seqs": None,
                            "kv_cache_dtype": "auto", "gpu_memory_utilization": fraction},
            "level": f"c{conc}", "level_spec": {"concurrency": conc}, "status": "ok",
            "summary": {"completed": 100, "failed": 0, "request_throughput": tput / 100,
                        "output_token_throughput": tput, "ttft_ms": {"p50": ttft, "p99": 2 * ttft},
                        "tpot_ms": {"p50": tpot, "p99": 1.5 * tpot}, "e2e_ms": {"p50": 500.0, "p99": 700.0}},
            "telemetry": {"running_batch_peak": conc, "kv_cache_peak_bytes": 1e6 * conc, "kv_pool_tokens": pool_tokens,
                          "kv_pool_bytes": pool_bytes, "device_mem_total_bytes": total},
            "server": {"gpus": [gpu]}}


def _sweep(path, gpu, series, pool_tokens, pool_bytes, total, scenario=SCENARIO, fraction=0.5):
    """series: precision -> [(concurrency, tok/s, TTFT p50, TPOT p50)]."""
    path.mkdir(parents=True)
    (path / "scenario.json").write_text(json.dumps(scenario))
    for precision, rows in series.items():
        for conc, tput, ttft, tpot in rows:
            append_point(path, _point(gpu, precision, conc, tput, ttft, tpot, pool_tokens, pool_bytes, total, fraction))
    return path


# H100: knee at batch 4 for both precisions (4 -> 8 adds 5 % of the first slot's tok/s per slot).
H100_SERIES = {"bf16": [(1, 100, 20, 10.0), (2, 200, 30, 11), (4, 400, 80, 12), (8, 420, 150, 20), (16, 425, 300, 40)],
               "fp8": [(1, 150, 20, 6.0), (2, 300, 30, 7), (4, 600, 70, 8), (8, 630, 140, 14), (16, 640, 280, 30)]}
# H200: the knee moved to batch 8.
H200_SERIES = {"bf16": [(1, 143, 14, 7.0), (2, 286, 20, 8), (4, 572, 79, 9), (8, 1100, 120, 12), (16, 1150, 300, 25)],
               "fp8": [(1, 210, 14, 4.9), (2, 420, 20, 5), (4, 840, 70, 6), (8, 1600, 110, 8), (16, 1650, 260, 20)]}


@pytest.fixture
def h100(tmp_path):
    return _sweep(tmp_path / "h100", "NVIDIA H100 80GB HBM3", H100_SERIES, 100_000, 1e10, 80e9)


@pytest.fixture
def h200(tmp_path):
    return _sweep(tmp_path / "h200", "NVIDIA H200", H200_SERIES, 400_000, 4e10, 141e9)


# --- the rules, by hand ----------------------------------------------------------------------------
def test_decode_and_tpot_scale_with_bandwidth():
    assert decode_bandwidth(1000.0, H100, H200) == pytest.approx(1432.8358, rel=1e-6)  # 1000 x 4800/3350
    assert tpot_bandwidth(6.7, H100, H200) == pytest.approx(4.6760417, rel=1e-6)  # 6.7 x 3350/4800
    assert tpot_bandwidth(10.0, H100, L4) == pytest.approx(111.66667, rel=1e-6)  # 10 x 3350/300


def test_decode_roofline_memory_share_is_fitted_to_the_vllm_bench_ratios():
    # m = (1 - 1/gain) / (1 - 3350/4800) for H200/H100 = 1.27, 1.12, 1.11 (issue 23).
    assert DECODE_MEMORY_SHARE == {16: pytest.approx(0.703774, abs=1e-6), 128: pytest.approx(0.354680, abs=1e-6),
                                   512: pytest.approx(0.328052, abs=1e-6)}
    # Linear in log(batch) between the fitted batches: 64 is 2/3 of the way from 16 to 128.
    assert memory_share(64) == pytest.approx(0.703774 + (0.354680 - 0.703774) * 2 / 3, abs=1e-6)
    assert memory_share(256) == pytest.approx((0.354680 + 0.328052) / 2, abs=1e-6)
    # Clamped outside them (and a figure without a batch takes the smallest batch's share).
    assert memory_share(1) == memory_share(None) == memory_share(16)
    assert memory_share(4096) == memory_share(512)


def test_decode_roofline_gives_back_the_evidence_and_blends_bandwidth_and_compute():
    for batch, ratio in ((16, 1.27), (128, 1.12), (512, 1.11)):  # H100 -> H200: the fitted ratios themselves
        gain, m, bw, compute = decode_roofline_terms(H100, H200, "bf16", batch)
        assert (gain, bw, compute) == (pytest.approx(ratio), pytest.approx(4800 / 3350), 1.0)
        assert decode_roofline(1000.0, H100, H200, "fp8", batch) == pytest.approx(1000 * ratio)  # same FP8 cores
    # H100 -> A100 at batch 128: 1 / (0.35468 x 3350/2039 + 0.64532 x 989/312) of the H100's.
    assert decode_roofline(1000.0, H100, A100, "bf16", 128) == pytest.approx(
        1000 / (0.354680 * 3350 / 2039 + 0.645320 * 989 / 312), rel=1e-5)
    # The other way round is the inverse: the share is re-expressed on the measured SKU (0.383 on an H200 at 64).
    back, m_h200, _, _ = decode_roofline_terms(H200, H100, "bf16", 64)
    assert back == pytest.approx(1 / decode_roofline_terms(H100, H200, "bf16", 64)[0])
    assert m_h200 == pytest.approx(0.471045 * 3350 / 4800 / (0.471045 * 3350 / 4800 + 0.528955), abs=1e-6)
    # No fp8 tensor path on an A100: bf16's rate stands in (weight-only FP8 runs bf16 matmuls).
    assert decode_roofline_terms(A100, H100, "fp8", 16)[3] == pytest.approx(1979 / 312)
    assert decode_roofline_terms(A100, SKUS["A100-40GB"], "fp8", 16)[3] == 1.0


def test_the_superseded_rule_stays_available_for_figures_made_with_it():
    assert RULES["decode-bandwidth"].text.startswith("SUPERSEDED by decode-roofline")
    assert "decode-bandwidth" not in current_rules() and "decode-roofline" in current_rules()
    old = project(_measurement(), H200, rules={"output_tok_s_at_knee": "decode-bandwidth"})["bf16"]
    fig = old["output_tok_s_at_knee"]
    assert fig.value == pytest.approx(400 * 4800 / 3350) and fig.rule_id == "decode-bandwidth"
    assert fig.rule.startswith("decode-bandwidth: SUPERSEDED") and fig.applied == "400 tok/s x bandwidth 4800/3350 GB/s"
    with pytest.raises(ValueError, match="does not project"):
        project(_measurement(), H200, rules={"output_tok_s_at_knee": "kv-pool-memory"})


def test_prefill_scales_with_compute_at_the_precision():
    assert prefill_compute(100.0, H100, A100, "bf16") == pytest.approx(316.98718, rel=1e-6)  # 100 x 989/312
    assert prefill_compute(100.0, H100, H200, "fp8") == pytest.approx(100.0)  # same tensor cores
    assert prefill_compute(100.0, H100, A100, "fp8") is None  # no FP8 path on an A100


def test_kv_pool_grows_by_the_extra_memory_times_the_fraction():
    # 1e10 B pool of 100,000 tokens (100,000 B each); NVML total 80e9 -> 80e9 x 141/80 = 141e9 on an H200;
    # 1e10 + (141e9 - 80e9) x 0.5 = 4.05e10 B = 405,000 tokens.
    tokens, pool = kv_pool_memory(100_000, 1e10, 0.5, H100, H200, 80e9)
    assert (tokens, pool) == (pytest.approx(405_000), pytest.approx(4.05e10))
    # Without an NVML total, datasheet GB count as GiB: 1e10 + 61 GiB x 0.5 = 42,749,125,632 B.
    tokens, _ = kv_pool_memory(100_000, 1e10, 0.5, H100, H200, None)
    assert tokens == pytest.approx(427_491.25632)
    # Onto a smaller card: 1e10 + (24e9 - 80e9) x 0.9 < 0: it does not fit.
    assert kv_pool_memory(100_000, 1e10, 0.9, H100, L4, 80e9)[0] < 0


def _measurement(**kw):
    base = dict(knee_batch=4, knee_reached=True, knee_point="bf16/c4", output_tok_s_at_knee=400.0,
                ttft_p50_ms_at_knee=80.0, tpot_batch=1, tpot_point="bf16/c1", tpot_p50_ms_c1=10.0,
                kv_pool_tokens=100_000, kv_pool_bytes=1e10, memory_fraction=0.9, device_mem_total_bytes=80e9,
                preference_throughput=420.0)
    return SkuMeasurement("H100-SXM", "runs/h100/points.jsonl", "NVIDIA H100 80GB HBM3",
                          {"bf16": PrecisionMeasurement("bf16", **(base | kw))})


def test_projected_figures_name_their_rule_source_and_numbers():
    figs = project(_measurement(), H200)["bf16"]
    assert figs["output_tok_s_at_knee"].value == pytest.approx(508.0)  # 400 x 1.27 (decode-roofline at batch 4)
    assert figs["tpot_p50_ms_c1"].value == pytest.approx(6.9791667, rel=1e-6)
    assert figs["ttft_p50_ms_at_knee"].value == pytest.approx(80.0)
    assert figs["kv_pool_tokens"].value == 649_000  # 1e10 + 61e9 x 0.9 = 6.49e10 B / 100,000 B
    for metric, fig in figs.items():
        assert fig.basis == "projected" and fig.rule_id in RULES and fig.rule.startswith(fig.rule_id + ": ")
        assert "runs/h100/points.jsonl" in fig.source and "H200 Tensor Core GPU datasheet" in fig.source
        assert fig.applied
    tput = figs["output_tok_s_at_knee"]
    assert tput.batch == 4 and tput.rule_id == "decode-roofline" and "4800/3350" in tput.applied
    assert tput.applied.startswith("400 tok/s x 1/(0.704/1.433 + 0.296/1.000) = x 1.270")
    small = project(_measurement(), L4)["bf16"]["kv_pool_tokens"]
    assert small.value is None and small.note.startswith("does not fit")
    # fp8 measured on an A100 (weight-only FP8): no FP8 TFLOP/s to scale TTFT by, and the figure says so.
    a100 = SkuMeasurement("A100-80GB", "runs/a100/points.jsonl", "NVIDIA A100-SXM4-80GB",
                          {"fp8": PrecisionMeasurement("fp8", knee_batch=4, knee_reached=True, ttft_p50_ms_at_knee=80.0)})
    ttft = project(a100, H100)["fp8"]["ttft_p50_ms_at_knee"]
    assert ttft.value is None and ttft.note == "no fp8 tensor-core rate on A100-80GB"


# --- the table with several measured SKUs ------------------------------------------------------------
def test_every_measured_sku_is_marked_measured_and_the_rest_projected_from_the_first():
    h100 = _measurement()
    h200 = SkuMeasurement("H200", "runs/h200/points.jsonl", "NVIDIA H200",
                          {"bf16": PrecisionMeasurement("bf16", knee_batch=8, output_tok_s_at_knee=1100.0,
                                                        preference_throughput=1150.0)})
    table = sku_table([h100, h200], None)
    assert table["H100-SXM"]["basis"] == table["H200"]["basis"] == "measured"
    h200_fig = table["H200"]["figures"]["bf16"]["output_tok_s_at_knee"]
    assert (h200_fig["value"], h200_fig["basis"], h200_fig["rule_id"]) == (1100.0, "measured", None)
    assert "runs/h200/points.jsonl" in h200_fig["source"]
    a100 = table["A100-80GB"]
    assert (a100["basis"], a100["precision"]) == ("projected", "bf16")
    assert "runs/h100/points.jsonl" in a100["figures"]["bf16"]["output_tok_s_at_knee"]["source"]
    with pytest.raises(ValueError, match="same SKU"):
        sku_table([h100, h100], None)


def test_h100_and_a100_get_distinct_preferred_precisions():
    # Datasheets alone: Hopper's FP8 tensor cores -> fp8 (subject to the gate); the A100 has none -> bf16.
    assert preferred_precision(H100)[0] == "fp8" and preferred_precision(A100)[0] == "bf16"
    assert "FP8 tensor cores (compute capability 9.0)" in preferred_precision(H100)[1]
    assert "no FP8 tensor cores (compute capability 8.0)" in preferred_precision(A100)[1]
    # Measured: fp8 preferred on the H100 when it was faster, bf16 when it was not or failed the gate.
    assert preferred_precision(H100, {"bf16": 6392.0, "fp8": 8063.0})[0] == "fp8"
    assert preferred_precision(H100, {"bf16": 6392.0, "fp8": 6000.0})[0] == "bf16"
    assert preferred_precision(H100, {"bf16": 6392.0, "fp8": 8063.0}, {"fp8": False})[0] == "bf16"
    # On an A100, fp8 is weight-only (bf16 matmuls): bf16 even when such a run was measured faster.
    precision, reason = preferred_precision(A100, {"bf16": 3000.0, "fp8": 3300.0})
    assert precision == "bf16" and "fp8 not considered: no FP8 tensor cores" in reason
    assert preferred_precision(A100, {"fp8": 3300.0})[0] == "bf16"
    # In one table: the measured H100 and the projected A100s differ, as do both H100 variants and A100s.
    h100 = SkuMeasurement("H100-SXM", "runs/h100/points.jsonl", "NVIDIA H100 80GB HBM3", {
        "bf16": PrecisionMeasurement("bf16", preference_throughput=6392.0),
        "fp8": PrecisionMeasurement("fp8", preference_throughput=8063.0)})
    table = sku_table([h100], None)
    assert (table["H100-SXM"]["precision"], table["H100-SXM"]["basis"]) == ("fp8", "measured")
    assert table["H100-PCIe"]["precision"] == "fp8"
    for name in ("A100-40GB", "A100-80GB"):
        assert (table[name]["precision"], table[name]["basis"]) == ("bf16", "projected")


def test_the_measured_skus_entry_follows_its_production_recommendation():
    # examples/h200-2026-12-07: at the largest batch both precisions ran (c64) fp8 read 4,085 tok/s in
    # one slow window against bf16's 4,210, while the recommendation (SLOs, every point) is fp8 c48.
    h200 = SkuMeasurement("H200", "runs/h200/points.jsonl", "NVIDIA H200", {
        "bf16": PrecisionMeasurement("bf16", preference_throughput=4210.0),
        "fp8": PrecisionMeasurement("fp8", preference_throughput=4085.0)})
    assert sku_table([h200], None)["H200"]["precision"] == "bf16"
    entry = sku_table([h200], None, recommended=("H200", "fp8", "the production recommendation (fp8 at c48)"))["H200"]
    assert entry["precision"] == "fp8" and entry["basis"] == "measured"
    assert entry["reason"].startswith("the production recommendation (fp8 at c48); the throughput rule alone would pick bf16")
    # A recommendation made on another SKU leaves this one's rule alone.
    assert sku_table([h200], None, recommended=("H100-SXM", "fp8", "x"))["H200"]["precision"] == "bf16"


def test_report_analysis_takes_other_measured_sweeps(h100, h200, tmp_path):
    _, result = analyse(h100, measured_elsewhere=[h200])
    table = result.sku_to_preferred_precision
    assert table["H100-SXM"]["basis"] == "measured" and table["H200"]["basis"] == "measured"
    assert table["H200"]["figures"]["bf16"]["output_tok_s_at_knee"]["value"] == 1100.0
    assert table["H200"]["precision"] == "fp8"  # its own measurement decides: 1,650 > 1,150 tok/s
    assert table["A100-80GB"]["basis"] == "projected" and table["A100-80GB"]["precision"] == "bf16"
    assert result.sku_table_scenario_differences is None  # same workload, load and SLOs
    again = _sweep(tmp_path / "h100-again", "NVIDIA H100 80GB HBM3", H100_SERIES, 100_000, 1e10, 80e9)
    with pytest.raises(ReportError, match="H100-SXM too"):
        analyse(h100, measured_elsewhere=[again])


def test_another_skus_sweep_of_a_different_workload_is_flagged(h100, h200):
    scenario = json.loads((h200 / "scenario.json").read_text())
    scenario["max_model_len"] = 8192
    (h200 / "scenario.json").write_text(json.dumps(scenario))
    _, result = analyse(h100, measured_elsewhere=[h200])
    assert list(result.sku_table_scenario_differences.values()) == [["max_model_len"]]


def test_measurement_reads_knee_c1_and_pool_from_the_points(h100):
    m = load_measurement(h100).by_precision["bf16"]
    assert (m.knee_batch, m.knee_reached, m.output_tok_s_at_knee, m.ttft_p50_ms_at_knee) == (4, True, 400, 80)
    assert (m.tpot_batch, m.tpot_p50_ms_c1, m.kv_pool_tokens, m.memory_fraction) == (1, 10.0, 100_000, 0.5)


def test_measurement_takes_the_pool_from_the_server_when_telemetry_has_none(tmp_path):
    path = tmp_path / "h100"
    path.mkdir()
    (path / "scenario.json").write_text(json.dumps(SCENARIO))
    for conc, tput, ttft, tpot in H100_SERIES["bf16"]:
        p = _point("NVIDIA H100 80GB HBM3", "bf16", conc, tput, ttft, tpot, None, None, 80e9)
        p["server"].update(kv_pool_tokens=100_000, kv_pool_bytes=1e10)  # what the server said at start-up
        append_point(path, p)
    m = load_measurement(path).by_precision["bf16"]
    assert (m.kv_pool_tokens, m.kv_pool_bytes) == (100_000, 1e10)


# --- prediction and comparison ---------------------------------------------------------------------
def test_prediction_carries_provenance(h100, tmp_path):
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
    pred = predict(h100, "h200", ["made before any H200 run"], now=now)
    assert (pred.target_sku, pred.measured_sku, pred.made_at) == ("H200", "H100-SXM", "2026-11-23T12:00:00+00:00")
    points = next(f for f in pred.source_files if f.path.endswith("points.jsonl"))
    assert points.sha256 == hashlib.sha256((h100 / "points.jsonl").read_bytes()).hexdigest()
    assert pred.rules == current_rules() and pred.generated_by.startswith("servesweep ")
    assert set(pred.rules) == {"decode-roofline", "tpot-bandwidth", "prefill-compute", "kv-pool-memory"}
    json_path, md_path = write_prediction(pred, tmp_path / "pred" / "prediction.json")
    assert read_prediction(json_path) == pred
    md = md_path.read_text()
    assert "projected, not measured" in md and "made before any H200 run" in md and "dummy" in md


def test_comparison_error_flags_and_the_moved_knee(h100, h200, tmp_path):
    pred = predict(h100, "H200")
    pred_path, _ = write_prediction(pred, tmp_path / "p.json")
    table = compare(pred, pred_path, h200)
    rows = {(r["precision"], r["metric"]): r for r in table.rows}
    tput = rows["bf16", "output_tok_s_at_knee"]
    # 400 x 1.27 = 508 predicted at batch 4; the H200's knee is batch 8 at 1,100 tok/s.
    assert tput["error_pct"] == pytest.approx(-53.818, abs=1e-3) and tput["flagged"]
    assert "knee moved" in tput["notes"][0]
    assert tput["measured_at_predicted_batch"] == 572  # at batch 4: 508 vs 572, -11.2 %
    assert tput["error_at_predicted_batch_pct"] == pytest.approx(-11.189, abs=1e-3)
    tpot = rows["bf16", "tpot_p50_ms_c1"]  # 10 x 3350/4800 = 6.979 vs 7.0
    assert tpot["error_pct"] == pytest.approx(-0.2976, abs=1e-3) and not tpot["flagged"]
    ttft = rows["bf16", "ttft_p50_ms_at_knee"]  # 80 vs 120 at the moved knee
    assert ttft["error_pct"] == pytest.approx(-33.333, abs=1e-3) and ttft["flagged"]
    kv = rows["bf16", "kv_pool_tokens"]  # 405,000 vs 400,000
    assert kv["error_pct"] == pytest.approx(1.25) and not kv["flagged"]
    assert table.flagged == sum(r["flagged"] for r in table.rows) and table.conditions_differ == []


def test_comparison_flags_both_signs_and_lists_differing_conditions(h100, tmp_path):
    pred = predict(h100, "H200")
    pred_path, _ = write_prediction(pred, tmp_path / "p.json")
    # Against the projection: tok/s measured 1.2x (error -16.7 %), TTFT 1.3x (-23.1 %), TPOT 0.8x (+25 %).
    bf16 = [(c, t * 1.27 * 1.2, ttft * 1.3, tpot * 3350 / 4800 * 0.8)  # 1.27: decode-roofline below batch 16
            for c, t, ttft, tpot in H100_SERIES["bf16"]]
    other = dict(SCENARIO, workload={"input_len": 1024, "output_len": 128})
    measured = _sweep(tmp_path / "h200b", "NVIDIA H200", {"bf16": bf16}, 405_000, 4.05e10, 141e9, scenario=other)
    table = compare(pred, pred_path, measured)
    rows = {(r["precision"], r["metric"]): r for r in table.rows}
    expected = {"output_tok_s_at_knee": (-16.667, False), "ttft_p50_ms_at_knee": (-23.077, True),
                "tpot_p50_ms_c1": (25.0, True), "kv_pool_tokens": (0.0, False)}
    for metric, (error, flagged) in expected.items():
        assert rows["bf16", metric]["error_pct"] == pytest.approx(error, abs=1e-3), metric
        assert rows["bf16", metric]["flagged"] is flagged, metric
    assert rows["fp8", "output_tok_s_at_knee"]["measured"] is None  # fp8 not in this sweep: no error, no flag
    assert not rows["fp8", "output_tok_s_at_knee"]["flagged"] and table.flagged == 2
    assert [d.split(":")[0] for d in table.conditions_differ] == ["workload.input_len"]


def test_a_field_only_one_side_has_is_not_a_condition_that_differs(tmp_path):
    # The blind H100 test of 2026-12-07: the measured scenario had stall_timeout_s and a search block the
    # prediction's (older) scenario lacked, and measured two of the four precisions.
    older = dict(SCENARIO, sweep={"precision": ["bf16", "fp8"], "max_batch_size": [16]})
    source = _sweep(tmp_path / "h100b", "NVIDIA H100 80GB HBM3", H100_SERIES, 100_000, 1e10, 80e9, scenario=older)
    pred = predict(source, "H200")
    pred_path, _ = write_prediction(pred, tmp_path / "p.json")
    series = {"bf16": [(c, t * 1.27, ttft, tpot * 3350 / 4800) for c, t, ttft, tpot in H100_SERIES["bf16"]]}
    newer = dict(older, workload={**older["workload"], "stall_timeout_s": 60.0},
                 sweep={**older["sweep"], "precision": ["bf16"], "search": {"method": "grid"}})
    measured = _sweep(tmp_path / "h200c", "NVIDIA H200", series, 405_000, 4.05e10, 141e9, scenario=newer)
    assert compare(pred, pred_path, measured).conditions_differ == []
    changed = dict(newer, workload={**newer["workload"], "output_len": 256})
    measured = _sweep(tmp_path / "h200d", "NVIDIA H200", series, 405_000, 4.05e10, 141e9, scenario=changed)
    assert [d.split(":")[0] for d in compare(pred, pred_path, measured).conditions_differ] == ["workload.output_len"]


def test_comparison_refuses_a_measurement_of_another_sku(h100, tmp_path):
    pred = predict(h100, "H200")
    pred_path, _ = write_prediction(pred, tmp_path / "p.json")
    with pytest.raises(ConfigError, match=r"predicts H200, but .* \(H100-SXM\)"):
        compare(pred, pred_path, h100)


# --- the command -----------------------------------------------------------------------------------
def _cli(capsys, *args):
    code = main(["project", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("make_args,message", [
    (lambda t, h: [t / "missing", "--sku", "H200", "--out", t / "p.json"], "does not exist"),
    (lambda t, h: [h, "--sku", "H300", "--out", t / "p.json"], "unknown SKU 'H300'; known: A100-40GB"),
    (lambda t, h: [h, "--sku", "H100-SXM", "--out", t / "p.json"], "measured on H100-SXM itself"),
    (lambda t, h: [h, "--sku", "H200", "--out", t / "p.txt"], "give a .json path"),
    (lambda t, h: ["--out", t / "p.json"], "give RESULTS_DIR --sku SKU, or --compare"),
    (lambda t, h: ["--compare", t / "none.json", h, "--out", t / "c.json"], "does not exist"),
    (lambda t, h: ["--compare", h / "scenario.json", h, "--out", t / "c.json"], "is not a servesweep prediction"),
    (lambda t, h: ["--compare", t / "p.json", h, "--out", t / "p.json"], "would overwrite the prediction"),
])
def test_project_errors_are_one_line_exit_2(capsys, tmp_path, h100, make_args, message):
    code, err = _cli(capsys, *make_args(tmp_path, h100))
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_project_on_a_cpu_sweep_says_there_is_no_sku(capsys, tmp_path):
    cpu = _sweep(tmp_path / "cpu", "", {"bf16": H100_SERIES["bf16"]}, 1000, 1e8, None)  # no GPU name recorded
    code, err = _cli(capsys, cpu, "--sku", "H200", "--out", tmp_path / "p.json")
    assert code == 2 and "no GPU (CPU)" in err


def test_project_then_compare_writes_json_and_md(capsys, tmp_path, h100, h200):
    code, _ = _cli(capsys, h100, "--sku", "H200", "--out", tmp_path / "out" / "prediction.json", "--note", "before")
    assert code == 0 and (tmp_path / "out" / "prediction.md").exists()
    code, _ = _cli(capsys, "--compare", tmp_path / "out" / "prediction.json", h200, "--out", tmp_path / "table.json")
    assert code == 0
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["flagged"] > 0 and "| bf16 | output tok/s at the knee |" in (tmp_path / "table.md").read_text()
