"""Energy per output token from the GPU power servesweep samples while a level runs.

Source: NVML's `nvmlDeviceGetPowerUsage` (servesweep/backends/gpu.py), the board power of each GPU
the server uses, summed over them, sampled every 250 ms by the telemetry sampler and averaged over
the level's measured window (`gpu_power_mean_w`, servesweep/backends/telemetry.py `window_stats`).
On recent GPUs NVML reports this power averaged over its own 1 s window.

    J per output token = mean power (W) / output tokens per second
    kWh per 1M output tokens = J per output token x 1e6 / 3.6e6

What it counts: the whole board (idle power, prefill work and memory included) over the window,
charged to the output tokens; not the CPU, the host or cooling. Other processes on the same GPUs
count too. Without NVML (a CPU run) there are no energy figures, never an estimate.
"""

from __future__ import annotations

import math
from typing import Any

POWER_SOURCE = ("NVML nvmlDeviceGetPowerUsage: board power of the server's GPUs, summed, sampled every 250 ms and "
                "averaged over the measured window")
JOULES_PER_KWH = 3.6e6


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def energy_figures(power_w: Any, output_tok_s: Any) -> dict[str, Any] | None:
    """J per output token and kWh per 1M output tokens of one point, or None without a power reading."""
    power, rate = _number(power_w), _number(output_tok_s)
    if power is None or not rate or rate <= 0:
        return None
    joules = power / rate
    return {"gpu_power_w": power, "output_tok_s": rate, "j_per_output_token": joules,
            "kwh_per_1m_output_tokens": joules * 1e6 / JOULES_PER_KWH, "source": POWER_SOURCE}


def energy_cost_per_1m(kwh_per_1m: float | None, usd_per_kwh: float | None) -> float | None:
    return None if kwh_per_1m is None or usd_per_kwh is None else kwh_per_1m * usd_per_kwh


ENERGY_HEADER = ["config", "precision", "level", "GPU power W", "output tok/s", "J per output token",
                 "kWh per 1M output tokens", "why this point"]


def energy_rows(df: Any, recommended: tuple[str, str] | None) -> list[list[str]]:
    """Per configuration (and so per precision) the point it would be deployed at: its highest
    goodput within the SLOs (else its highest throughput), with the recommended point first."""
    ok = df[(df.status == "ok") & df.j_per_output_token.notna()] if "j_per_output_token" in df else df.iloc[0:0]
    rows = []
    for config, group in ok.groupby("config", sort=False):
        meets = group[group.meets_slo]
        pick = (meets if len(meets) else group).sort_values("goodput" if len(meets) else "output_token_throughput")
        row = pick.iloc[-1]
        why = "best goodput within the SLOs" if len(meets) else "highest throughput (no point met the SLOs)"
        if recommended == (row.config, row.level):
            why = "the recommendation"
        rows.append([row.config, row.precision, row.level, f"{row.gpu_power_w:,.0f}",
                     f"{row.output_token_throughput:,.0f}", f"{row.j_per_output_token:.3f}",
                     f"{row.j_per_output_token * 1e6 / JOULES_PER_KWH:.3f}", why])
    return sorted(rows, key=lambda r: r[-1] != "the recommendation")


def energy_lines(rows: list[list[str]], measured_on: str | None) -> list[str]:
    if not rows:
        return ["No GPU power samples in this sweep (NVML not available, e.g. a CPU run): no energy figures."]
    return [f"Measured on {measured_on or 'the sweep machine'}. Power source: {POWER_SOURCE}. J per output token = "
            "mean power / output tokens per second: the whole board (idle, prefill and memory included) charged "
            "to the output tokens; not the host CPU or cooling."]
