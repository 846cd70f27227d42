"""The report's energy section: per configuration, the J per output token of the point it would be
deployed at (the figures: servesweep.analysis.energy_per_token)."""

from __future__ import annotations

from typing import Any

from servesweep.analysis.energy_per_token import JOULES_PER_KWH, POWER_SOURCE

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
