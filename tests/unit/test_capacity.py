"""Capacity arithmetic checked by hand on small numbers, edge cases, the price table and the files."""

import json
from pathlib import Path

import pytest

from servesweep.errors import ConfigError
from servesweep.reports.capacity import (
    CapacityReport,
    SkuGoodput,
    plan_capacity,
    read_prices,
    render_markdown,
    write_capacity,
)
from servesweep.analysis.skus import SKUS

ROOT = Path(__file__).resolve().parents[2]


def test_replicas_gpus_and_costs_by_hand():
    report = plan_capacity(
        {"H100-SXM": {"goodput_rps": 10.0, "basis": "measured", "gpus_per_replica": 2},
         "L4": SkuGoodput(goodput_rps=2.0, basis="projected", note="roofline from H100-SXM")},
        peak_rps=15.0, prices={"H100-SXM": 2.0}, output_tokens_per_request=100, price_source="my.yaml")
    h100, l4 = report.skus
    # Planned rate 10 x 0.7 = 7 req/s per replica; ceil(15 / 7) = 3 replicas of 2 GPUs.
    assert h100.basis == "measured" and h100.status == "ok"
    assert h100.planned_rps_per_replica == pytest.approx(7.0)
    assert (h100.replicas_at_peak, h100.gpus_at_peak) == (3, 6)
    # No profile: the peak every hour, so 3 replicas x 2 GPUs x 24 h.
    assert h100.hourly_replicas == [3] * 24 and h100.gpu_hours_per_day == 144.0
    assert h100.usd_per_day == pytest.approx(288.0)
    # $2 x 2 GPUs per replica-hour over 7 req/s x 100 tokens x 3600 s = 2.52M tokens: $1.587 per 1M.
    assert h100.usd_per_1m_output_tokens == pytest.approx(4.0 / 2.52)
    # Over the day: $288 for 15 req/s x 86400 s x 100 tokens = 129.6M tokens.
    assert h100.usd_per_1m_output_tokens_day == pytest.approx(288.0 / 129.6)
    # L4: planned 1.4 req/s, ceil(15 / 1.4) = 11 replicas of one GPU; no price, so no cost.
    assert l4.basis == "projected" and (l4.replicas_at_peak, l4.gpus_at_peak) == (11, 11)
    assert l4.gpu_hours_per_day == 264.0
    assert l4.usd_per_gpu_hour is None and l4.usd_per_day is None and l4.usd_per_1m_output_tokens is None
    assert report.headroom == 0.3 and report.profile == "flat" and report.peak_rps == 15.0
    assert "70% of the goodput" in report.policy and "30% headroom" in report.policy


def test_diurnal_fractions_size_each_hour():
    fractions = [0.0] * 6 + [0.5] * 12 + [1.0] * 6
    report = plan_capacity({"H200": {"goodput_rps": 5.0, "basis": "measured"}}, peak_rps=8.0,
                           headroom=0.2, profile=fractions, prices={"H200": 3.0}, output_tokens_per_request=50)
    row = report.skus[0]
    # Planned 4 req/s per replica: idle hours keep min_replicas=1, 4 req/s needs 1, 8 req/s needs 2.
    assert report.hourly_rps == [0.0] * 6 + [4.0] * 12 + [8.0] * 6
    assert row.hourly_replicas == [1] * 6 + [1] * 12 + [2] * 6
    assert row.replicas_at_peak == 2 and row.gpu_hours_per_day == 30.0
    assert row.usd_per_day == pytest.approx(90.0)
    assert row.usd_per_1m_output_tokens == pytest.approx(3.0 / (4 * 50 * 3600) * 1e6)
    day_tokens = (12 * 4 + 6 * 8) * 3600 * 50
    assert row.usd_per_1m_output_tokens_day == pytest.approx(90.0 / day_tokens * 1e6)
    no_floor = plan_capacity({"H200": {"goodput_rps": 5.0, "basis": "measured"}}, peak_rps=8.0,
                             headroom=0.2, profile=fractions, min_replicas=0)
    assert no_floor.skus[0].hourly_replicas[:6] == [0] * 6 and no_floor.skus[0].gpu_hours_per_day == 24.0


def test_hourly_rps_pairs_and_peak_from_profile():
    pairs = [(h, 2.0 if h < 20 else 6.0) for h in reversed(range(24))]
    report = plan_capacity({"A": {"goodput_rps": 4.0, "basis": "measured"}}, peak_rps=None, headroom=0.5,
                           profile=pairs)
    row = report.skus[0]
    assert report.peak_rps == 6.0 and report.profile == "hourly_rps"
    assert row.hourly_replicas == [1] * 20 + [3] * 4 and row.replicas_at_peak == 3
    assert plan_capacity({"A": {"goodput_rps": 4.0, "basis": "measured"}}, None,
                         profile=dict(pairs)).hourly_rps == report.hourly_rps


def test_whole_ratios_do_not_round_up_from_float_error():
    # 1 - 0.9 is 0.0999...98 in binary: 0.3 / (1 x 0.0999...98) is 3.0000000000000004.
    row = plan_capacity({"A": {"goodput_rps": 1.0, "basis": "measured"}}, 0.3, headroom=0.9).skus[0]
    assert row.replicas_at_peak == 3
    assert plan_capacity({"A": {"goodput_rps": 10.0, "basis": "measured"}}, 7.0000001).skus[0].replicas_at_peak == 2


@pytest.mark.parametrize("entry, reason", [
    ({"goodput_rps": 0.0, "basis": "measured"}, "goodput 0"),
    ({"goodput_rps": None, "basis": "projected"}, "no projected goodput"),
    ({"basis": "measured"}, "no measured goodput"),
])
def test_zero_or_missing_goodput_cannot_serve(entry, reason):
    report = plan_capacity({"X": entry, "Y": {"goodput_rps": 1.0, "basis": "measured"}}, 3.0,
                           prices={"X": 1.0, "Y": 1.0}, output_tokens_per_request=10)
    x, y = report.skus
    assert x.status == "cannot_serve" and reason in x.reason
    assert x.replicas_at_peak is None and x.usd_per_day is None and x.usd_per_1m_output_tokens is None
    assert y.status == "ok" and y.replicas_at_peak == 5
    assert "cannot serve: " + x.reason in render_markdown(report)


@pytest.mark.parametrize("kwargs, message", [
    (dict(peak_rps=0), "peak requests/s must be > 0"),
    (dict(peak_rps=float("nan")), "finite"),
    (dict(peak_rps=None), "give a peak request rate"),
    (dict(headroom=1.0), r"headroom must be a fraction in \[0, 1\)"),
    (dict(headroom=-0.1), "headroom"),
    (dict(profile=[0.5] * 23), "needs 24 values"),
    (dict(profile=[1.5] + [0.5] * 23), "hour 0 has 1.5"),
    (dict(profile=[0.5] * 24, peak_rps=None), "needs the peak"),
    (dict(profile=[(h, 1.0) for h in range(23)]), r"missing \[23\]"),
    (dict(profile=[(0, 1.0)] + [(h, 1.0) for h in range(24)]), "hour 0 is given twice"),
    (dict(profile=[(h, 20.0) for h in range(24)]), "above the peak 10"),
    (dict(profile=[(h, 0.0) for h in range(24)], peak_rps=None), "no traffic"),
    (dict(profile=[(h, -1.0) for h in range(24)]), "must be >= 0"),
    (dict(profile=["busy"] * 24), "fractions or \\(hour, requests/s\\) pairs"),
    (dict(output_tokens_per_request=0), "output tokens per request must be > 0"),
    (dict(min_replicas=-1), "min_replicas"),
])
def test_bad_inputs_are_config_errors(kwargs, message):
    args = dict(goodput={"A": {"goodput_rps": 1.0, "basis": "measured"}}, peak_rps=10.0) | kwargs
    with pytest.raises(ConfigError, match=message):
        plan_capacity(**args)


def test_bad_goodput_entries():
    with pytest.raises(ConfigError, match="goodput of A: basis"):
        plan_capacity({"A": {"goodput_rps": 1.0, "basis": "guessed"}}, 1.0)
    with pytest.raises(ConfigError, match="goodput of A: goodput_rps"):
        plan_capacity({"A": {"goodput_rps": -1.0, "basis": "measured"}}, 1.0)
    with pytest.raises(ConfigError, match="no SKU"):
        plan_capacity({}, 1.0)


def test_price_table_example_and_errors(tmp_path):
    example = ROOT / "scenarios" / "prices" / "example.yaml"
    assert "FICTIONAL" in example.read_text()
    prices = read_prices(example)
    assert prices and set(prices) <= set(SKUS)  # every example key is a SKU name servesweep knows
    assert all(p > 0 for p in prices.values())
    for body, message in [("", "expected a mapping"), ("H200: 3\n", "exactly {usd_per_gpu_hour"),
                          ("H200: {usd_per_gpu_hour: 0}\n", "positive number"),
                          ("H200: {usd_per_gpu_hour: cheap}\n", "positive number"),
                          ("H200: {usd_per_gpu_hour: 1, currency: EUR}\n", "exactly"),
                          ("H200: [\n", "not valid YAML")]:
        path = tmp_path / "p.yaml"
        path.write_text(body)
        with pytest.raises(ConfigError, match=message):
            read_prices(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_prices(tmp_path / "none.yaml")


def test_files_round_trip(tmp_path):
    report = plan_capacity({"H100-SXM": {"goodput_rps": 10.0, "basis": "measured"},
                            "L4": {"goodput_rps": 0.0, "basis": "projected"}}, 15.0,
                           prices={"H100-SXM": 2.0}, output_tokens_per_request=100, price_source="prices.yaml")
    json_path, md_path = write_capacity(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["schema_version"] == 1
    assert CapacityReport.model_validate(data) == report
    md = md_path.read_text()
    assert report.policy in md
    # 3 one-GPU replicas all day: 72 GPU-hours, $144; $2 / 2.52M tokens = $0.794; $144 / 129.6M = $1.111.
    assert "| H100-SXM | measured | 10 | 7 | 1 | 3 | 3 | 72 | 2.00 | 144.00 | 0.794 | 1.111 |" in md
    assert "| L4 | projected | 0 | cannot serve:" in md
    assert "user-supplied" in md
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| SKU"))
    table = [line for line in lines[start:] if line.startswith("|")]
    assert len(table) == 4 and len({line.count("|") for line in table}) == 1  # every row has 12 cells


def _rec(result):
    """A sweep's analysis as goodput_by_sku reads it: through recommendation.json's model."""
    from servesweep.results.recommendation import Recommendation

    rec = dict(result["production_recommendation"], based_on={"config": "c", "level": "l"})
    return Recommendation.model_validate(dict(result, production_recommendation=rec))


def test_goodput_per_sku_from_a_sweep_result():
    from servesweep.reports.capacity import goodput_by_sku

    result = {
        "production_recommendation": {"precision": "fp8", "concurrency": 32, "verified": True,
                                      "measured_on": "NVIDIA H100 80GB HBM3", "expected": {"goodput": 30.0}},
        "combined_sweep": {"points": [
            {"precision": "fp8", "goodput": 30.0, "meets_slo": True, "fits_budget": True},
            {"precision": "bf16", "goodput": 20.0, "meets_slo": True, "fits_budget": True},
            {"precision": "bf16", "goodput": 25.0, "meets_slo": False, "fits_budget": True},
        ]},
        "sku_to_preferred_precision": {"H100-SXM": {"basis": "measured", "precision": "fp8"},
                                       "A100-80GB": {"basis": "projected", "precision": "bf16"}},
    }
    g = goodput_by_sku(_rec(result))
    assert g["H100-SXM"].basis == "measured" and g["H100-SXM"].goodput_rps == 30.0
    # A100 has no FP8: its projection starts from the best bf16 point within the SLOs, x the decode-roofline
    # gain at that point's batch (none given: the smallest fitted batch's memory share, 0.70377 on an H100).
    assert g["A100-80GB"].basis == "projected"
    assert g["A100-80GB"].goodput_rps == pytest.approx(20.0 / (0.70377 * 3350 / 2039 + 0.29623 * 989 / 312), rel=1e-4)
    assert "decode-roofline" in g["A100-80GB"].note
    # At batch 128 the share is 0.35468: compute, where the A100 is 3.2x slower, weighs more.
    at128 = dict(result, combined_sweep={"points": [dict(p, batch=128) for p in result["combined_sweep"]["points"]]})
    assert goodput_by_sku(_rec(at128))["A100-80GB"].goodput_rps == pytest.approx(
        20.0 / (0.35468 * 3350 / 2039 + 0.64532 * 989 / 312), rel=1e-4)
    # A CPU sweep: the machine itself is the measured row; GPUs have nothing to project from.
    cpu = dict(result, sku_to_preferred_precision={"A100-80GB": {"basis": "projected", "precision": "bf16"}})
    cpu["production_recommendation"] = dict(result["production_recommendation"], measured_on="CPU")
    g = goodput_by_sku(_rec(cpu))
    assert g["CPU"].basis == "measured" and g["A100-80GB"].goodput_rps is None


def test_goodput_per_sku_with_a_second_measured_sku_from_another_sweep():
    from servesweep.reports.capacity import goodput_by_sku

    result = {
        "production_recommendation": {"sku": "H200", "measured_on": "NVIDIA H200", "precision": "fp8",
                                      "concurrency": 64, "verified": True, "expected": {"goodput": 45.0}},
        "combined_sweep": {"points": [{"precision": "fp8", "goodput": 45.0, "meets_slo": True, "fits_budget": True}]},
        # H100 listed first, measured by another sweep (report --measured): this sweep's goodput is the H200's.
        "sku_to_preferred_precision": {"H100-SXM": {"basis": "measured", "precision": "fp8"},
                                       "H200": {"basis": "measured", "precision": "fp8"}},
    }
    g = goodput_by_sku(_rec(result))
    assert g["H200"].goodput_rps == 45.0 and g["H200"].basis == "measured"
    assert g["H100-SXM"].goodput_rps is None and "another sweep" in g["H100-SXM"].note


def test_a_cpu_sweep_never_lends_its_goodput_to_a_sku_measured_elsewhere():
    from servesweep.reports.capacity import goodput_by_sku

    # `report CPU_DIR --measured H200_DIR`: the recommendation's sku comes from the scenario, the
    # table's only measured entry is the other sweep's H200; this sweep's goodput is the CPU's.
    result = {
        "production_recommendation": {"sku": "H200", "measured_on": "CPU", "precision": "bf16",
                                      "concurrency": 4, "verified": False, "expected": {"goodput": 0.5}},
        "combined_sweep": {"points": [{"precision": "bf16", "goodput": 0.5, "meets_slo": True, "fits_budget": True}]},
        "sku_to_preferred_precision": {"H200": {"basis": "measured", "precision": "fp8"},
                                       "A100-80GB": {"basis": "projected", "precision": "bf16"}},
    }
    g = goodput_by_sku(_rec(result))
    assert g["CPU"].basis == "measured" and g["CPU"].goodput_rps == 0.5
    assert g["H200"].goodput_rps is None and "another sweep" in g["H200"].note
    assert g["A100-80GB"].goodput_rps is None  # nothing measured on a GPU here to project from
