"""Sweep analyses on synthetic points with known answers."""

import pytest

from servesweep.analysis.knee import find_knee
from servesweep.analysis.selection import (
    batch_sweep,
    combined_sweep,
    margin_advice,
    points_frame,
    precision_sweep,
    production_recommendation,
)
from servesweep.analysis.drift_scores import compare_outputs
from servesweep.results.recommendation import DriftScores
from servesweep.analysis.skus import SKUS, PrecisionMeasurement, SkuMeasurement, sku_from_gpu_name, sku_table

from tests_support import GIB, point, typed


def test_knee_is_where_marginal_throughput_per_slot_collapses():
    batches = [1, 2, 4, 8, 16, 32]
    tputs = [100, 200, 390, 760, 800, 810]  # linear to 8, then flat
    knee = find_knee(batches, tputs)
    assert knee["knee_batch_size"] == 8 and knee["knee_reached"]
    assert knee["knee_batch_size"] in batches


def test_knee_not_reached_is_the_largest_batch_and_flagged():
    knee = find_knee([1, 4, 16, 64], [10, 40, 160, 640])
    assert knee["knee_batch_size"] == 64 and not knee["knee_reached"]


def test_knee_reports_marginal_throughput_per_kv_gib():
    knee = find_knee([1, 2, 4, 8], [100, 200, 300, 310], [1 * GIB, 2 * GIB, 4 * GIB, 8 * GIB])
    assert knee["segments"][0]["marginal_throughput_per_kv_gib"] == pytest.approx(100)
    assert knee["segments"][2]["marginal_throughput_per_kv_gib"] == pytest.approx(2.5)


def frame(points, slo=None):
    return points_frame(typed(*points), slo)


def test_batch_sweep_on_four_batch_sizes_with_a_failed_point():
    pts = [point("bf16", c, t) for c, t in [(1, 100), (4, 400), (16, 1500), (64, 1700)]]
    pts.append(point("bf16", 256, 0, status="failed", cause="out of memory"))
    b = batch_sweep(frame(pts))
    assert b.knee_batch_size == 16
    assert b.by_precision["bf16"].distinct_batch_sizes == 4
    assert b.failed_points[0]["cause"] == "out of memory"


def test_precision_ratios_at_equal_batch():
    pts = [point("fp32", c, t) for c, t in [(1, 50), (8, 300)]] + [point("bf16", c, t) for c, t in [(1, 100), (8, 900), (32, 2000)]]
    drift = {"bf16": DriftScores(token_agreement=0.9, logprob_cosine=0.99, reference="fp32")}
    p = precision_sweep(frame(pts), drift)
    assert p["bf16"].batch == 8  # the largest batch both precisions ran
    assert p["bf16"].speedup_vs_fp32 == pytest.approx(3.0)
    assert p["bf16"].token_agreement == 0.9 and p["fp32"].speedup_vs_fp32 == 1.0


def test_budget_excludes_the_fastest_config_and_slo_excludes_slow_ones():
    pts = [point("fp32", 1, 50, dev_peak=30 * GIB),
           point("fp32", 8, 300, dev_peak=30 * GIB),
           point("bf16", 8, 900, dev_peak=20 * GIB),
           point("bf16", 64, 1500, dev_peak=20 * GIB, ttft_p99=5000),  # breaks the TTFT SLO
           point("fp8", 64, 2500, dev_peak=70 * GIB)]  # fastest, but over the 40 GiB budget
    df = frame(pts, {"ttft_ms": 1000, "percentile": 99})
    comb = combined_sweep(df, 40 * GIB)
    assert comb.best_config["config"] == "bf16" and comb.best_config["level"] == "c8"
    assert comb.baseline["config"] == "fp32" and comb.baseline["level"] == "c1"
    assert comb.speedup_vs_baseline["output_token_throughput"] == pytest.approx(18.0)
    assert "fp8" in comb.excluded_by_budget
    assert combined_sweep(df, None).best_config["config"] == "fp8"


@pytest.mark.parametrize("margin,preempted,direction", [
    (2.0, False, "too tight"), (20.0, True, "too tight"), (20.0, False, "in band"), (60.0, False, "too loose")])
def test_oom_margin_band(margin, preempted, direction):
    assert margin_advice(margin, preempted)["direction"] == direction


def test_recommendation_carries_margin_and_its_evidence():
    pts = [point("fp32", 1, 50), point("bf16", 16, 900, kv_frac=0.97, seqs=16)]
    df = frame(pts)
    comb = combined_sweep(df, None)
    rec = production_recommendation(df, comb, batch_sweep(df), "H100-SXM", "NVIDIA H100 80GB HBM3")
    assert rec.precision == "bf16" and rec.server_knob("max_batch_size") == 16 and rec.concurrency == 16
    assert rec.oom_margin_pct == pytest.approx(3.0) and rec.direction == "too tight"
    assert rec.based_on.model_dump() == {"config": "bf16-seqs16", "level": "c16", "points_compared": 2}
    for key in ("sku", "max_num_seqs", "gpu_memory_utilization", "expected", "kv_cache_peak_bytes"):
        assert key in rec.to_file()


def test_sku_table_marks_measured_and_projects_the_rest():
    assert sku_from_gpu_name("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert sku_from_gpu_name("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert sku_from_gpu_name("NVIDIA H100 PCIe") == "H100-PCIe"
    for other in ("NVIDIA GH200 480GB", "NVIDIA H100 NVL", "NVIDIA H200 NVL"):  # no row of SKUS fits them
        assert sku_from_gpu_name(other) is None, other
    measured = SkuMeasurement("H100-SXM", "h100/points.jsonl", by_precision={
        "bf16": PrecisionMeasurement("bf16", knee_batch=64, output_tok_s_at_knee=1000.0, ttft_p50_ms_at_knee=100.0,
                                     preference_throughput=1000.0),
        "fp8": PrecisionMeasurement("fp8", knee_batch=64, output_tok_s_at_knee=1300.0, ttft_p50_ms_at_knee=80.0,
                                    preference_throughput=1300.0)})
    table = sku_table([measured], 30e9)
    assert table["H100-SXM"]["basis"] == "measured" and table["H100-SXM"]["precision"] == "fp8"
    assert table["A100-80GB"] == table["A100-80GB"] | {"basis": "projected", "precision": "bf16"}
    assert "no FP8 tensor cores" in table["A100-80GB"]["reason"]
    assert "fp8" not in table["A100-80GB"]["figures"]  # no FP8 path to project onto
    a100 = table["A100-80GB"]["figures"]["bf16"]["output_tok_s_at_knee"]
    # decode-roofline at batch 64: m = 0.70377 + (0.35468 - 0.70377) x log(64/16)/log(128/16) = 0.47104 on the
    # H100; T(A100) = 0.47104 x 3350/2039 + 0.52896 x 989/312 (T(H100) = 1).
    assert a100["value"] == pytest.approx(1000 / (0.47104 * 3350 / 2039 + 0.52896 * 989 / 312), rel=1e-4)
    assert a100["rule_id"] == "decode-roofline"
    assert table["H200"]["precision"] == "fp8" and table["L4"]["fits_memory"] is False
    for name in ("A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "L40S", "L4", "A10G"):
        assert name in SKUS and table[name]["reason"]


def test_drift_high_cosine_but_different_token_is_found():
    ref = [{"tokens": ["a", "b", "c"], "top_logprobs": [{"a": -0.1}, {"b": -0.69, "x": -0.70}, {"c": -0.1}]}]
    other = [{"tokens": ["a", "x", "c"], "top_logprobs": [{"a": -0.1}, {"b": -0.70, "x": -0.69}, {"c": -0.1}]}]
    d = compare_outputs(ref, other)
    assert d["token_agreement"] == pytest.approx(2 / 3)
    assert d["logprob_cosine"] > 0.99
    ex = d["high_cosine_divergence_example"]
    assert ex["position"] == 1 and ex["reference_token"] == "b" and ex["token"] == "x"


def test_budget_is_judged_on_what_the_load_needs_not_on_vllms_preallocation():
    # The H200 case of issue 23: vLLM takes 0.9 x 141 GB whatever the load (device peak ~118 GiB,
    # KV pool 96 GiB: non-KV 22 GiB), the load's KV peak is 3 GiB -> 22 + 3 / 0.775 = 25.9 GiB.
    from servesweep.analysis.selection import no_recommendation

    pts = [point("fp32", 1, 50), point("fp8", 32, 4000, kv_frac=3 / 96, dev_peak=118 * GIB)]
    for p in pts:
        p["telemetry"].update(kv_pool_bytes=96 * GIB, kv_cache_peak_bytes=p["telemetry"]["kv_cache_peak_frac"] * 96 * GIB)
    df = frame(pts)
    comb = combined_sweep(df, 80 * GIB)
    assert df.memory_at_load_bytes[1] == pytest.approx(22 * GIB + 3 * GIB / 0.775)
    assert comb.best_config["config"] == "fp8" and comb.best_config["fits_budget"] is True
    # 20 GiB is less than that need: no recommendation, and the reason names the budget and the need.
    comb = combined_sweep(df[df.precision == "fp8"], 20 * GIB)
    assert comb.best_config is None
    why = no_recommendation(df[df.precision == "fp8"], comb)
    assert why.reason == "1 point(s) met the SLOs but none fits the VRAM budget of 20 GiB"
    assert "25.9 GiB (fp8 c32)" in why.detail[0]


def test_no_recommendation_says_why():
    from servesweep.analysis.selection import no_recommendation

    slow = frame([point("bf16", 1, 100, ttft_p99=5000.0)], {"ttft_ms": 1000, "percentile": 99})
    assert no_recommendation(slow, combined_sweep(slow, None)).reason == "no point met the SLOs (1 measured)"
    dead = frame([point("bf16", 1, 0, status="failed", cause="out of memory")])
    assert no_recommendation(dead, {}).reason == "no point was measured (1 failed)"
    gated = frame([point("fp8", 1, 100)])
    comb = combined_sweep(gated, None, {"fp8": "failed the accuracy gate (x)"})
    assert no_recommendation(gated, comb).reason.startswith("every point that met the SLOs within the budget")


def test_a_verification_of_another_point_does_not_verify_the_recommendation():
    from servesweep.analysis.selection import apply_verification

    from servesweep.results.recommendation import ProductionRecommendation
    from servesweep.results.verification import Verification

    def rec():
        return ProductionRecommendation(precision="fp8", based_on={"config": "fp8", "level": "c32"}, oom_margin_pct=60.0)

    attempt = {"sizing": {"kv_cache_memory_bytes": 1}, "traffic": {}, "stress": {"oom_margin_pct": 20.0},
               "passed": True, "reasons": [], "checks": []}
    other = rec()
    apply_verification(other, Verification(config="bf16", level="c32", passed=True, attempts=[attempt]))
    assert other.verified is False and "run the sweep again" in other.verification.skipped
    same = rec()
    apply_verification(same, Verification(config="fp8", level="c32", passed=True, attempts=[attempt]))
    assert same.verified is True and same.oom_margin_pct == 20.0
