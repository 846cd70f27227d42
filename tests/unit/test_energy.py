"""Energy per output token from recorded NVML power samples (the committed H200 run's telemetry),
in the recommendation, the report's section and the capacity plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servesweep.backends.telemetry import window_stats
from servesweep.reports.capacity import SkuGoodput, plan_capacity
from servesweep.analysis.energy_per_token import energy_figures
from servesweep.reports.energy import energy_lines, energy_rows
from servesweep.analysis.selection import points_frame
from servesweep.analysis.recommend import analyse
from servesweep.results import read_points
from servesweep.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "examples" / "h200-2026-12-02" / "sweep"
LEVEL = H200 / "configs" / "bf16-seqs512" / "c16"


def _recorded() -> tuple[list[dict], dict]:
    samples = [json.loads(line) for line in (LEVEL / "telemetry.jsonl").read_text().splitlines() if line.strip()]
    return samples, json.loads((LEVEL / "summary.json").read_text())


def test_joules_per_token_from_recorded_nvml_samples():
    samples, summary = _recorded()
    level = summary["levels"][0]
    stats = window_stats(samples, level["start_s"], level["end_s"], {"bytes": None, "tokens": None})
    # The window's mean power recomputed from the recorded samples is the one the run stored.
    assert stats["gpu_power_mean_w"] == pytest.approx(level["telemetry"]["gpu_power_mean_w"])
    energy = energy_figures(stats["gpu_power_mean_w"], level["output_token_throughput"])
    assert energy["j_per_output_token"] == pytest.approx(stats["gpu_power_mean_w"] / level["output_token_throughput"])
    # Mean power x window / tokens is the energy the samples integrate to over the window, per token.
    inside = [s for s in samples if level["start_s"] <= s["t"] <= level["end_s"] and s.get("gpus")]
    t = np.array([s["t"] for s in inside])
    w = np.array([sum(g["power_w"] for g in s["gpus"]) for s in inside])
    integral = float(np.sum((w[1:] + w[:-1]) / 2 * np.diff(t))) / (t[-1] - t[0])
    assert energy["gpu_power_w"] == pytest.approx(integral, rel=0.03)
    assert 0.05 < energy["j_per_output_token"] < 5  # an H200 board at a few hundred watts, thousands of tok/s
    assert energy["kwh_per_1m_output_tokens"] == pytest.approx(energy["j_per_output_token"] / 3.6)
    assert "nvmlDeviceGetPowerUsage" in energy["source"]


def test_no_power_no_energy():
    assert energy_figures(None, 1000.0) is None
    assert energy_figures(float("nan"), 1000.0) is None
    assert energy_figures(300.0, 0.0) is None
    assert energy_lines([], "CPU")[0].startswith("No GPU power samples")


def test_the_recommendation_and_the_report_carry_energy_from_the_committed_h200_run():
    df, result = analyse(H200)
    rec = result.production_recommendation
    point = df[(df.config == rec.based_on.config) & (df.level == rec.based_on.level)].iloc[0]
    assert rec.energy["j_per_output_token"] == pytest.approx(point.gpu_power_w / point.output_token_throughput)
    rows = energy_rows(df, (rec.based_on.config, rec.based_on.level))
    assert rows[0][-1] == "the recommendation" and rows[0][1] == rec.precision
    assert sorted(r[1] for r in rows) == ["bf16", "fp16", "fp32", "fp8"]  # one per configuration and precision


def test_a_cpu_sweep_has_no_energy_figures():
    df = points_frame(read_points(ROOT / "examples" / "cpu-repeats" / "after-seed-fix" / "r3-rerun"))
    assert len(df) and df.j_per_output_token.isna().all()
    assert energy_rows(df, None) == []


def test_capacity_energy_per_million_tokens_and_its_cost():
    goodput = {"H200": SkuGoodput(goodput_rps=10, basis="measured", j_per_output_token=0.1),
               "H100-SXM": SkuGoodput(goodput_rps=8, basis="projected")}
    plan = plan_capacity(goodput, 20, prices={"H200": 4.0}, output_tokens_per_request=100, usd_per_kwh=0.2)
    h200, h100 = plan.skus
    assert h200.kwh_per_1m_output_tokens == pytest.approx(0.1 * 1e6 / 3.6e6)
    assert h200.usd_energy_per_1m_output_tokens == pytest.approx(0.1 * 1e6 / 3.6e6 * 0.2)
    assert h100.kwh_per_1m_output_tokens is None  # no power is projected
    assert "nvmlDeviceGetPowerUsage" in plan.energy_source
    no_price = plan_capacity(goodput, 20, output_tokens_per_request=100)
    assert no_price.skus[0].kwh_per_1m_output_tokens is not None and no_price.skus[0].usd_energy_per_1m_output_tokens is None
    with pytest.raises(ConfigError, match="energy price"):
        plan_capacity(goodput, 20, usd_per_kwh=-1)
