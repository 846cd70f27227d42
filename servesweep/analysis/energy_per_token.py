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
