"""`servesweep report DIR`: report.html, report.md, points.csv, plots and recommendation.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from servesweep.cli.common import console
from servesweep.errors import EXIT_NO_RECOMMENDATION, EXIT_OK
from servesweep.reports.headroom import console_line
from servesweep.reports.render import write_report
from servesweep.results import POINTS_FILE, RECOMMENDATION_FILE, torn_last_line
from servesweep.results.recommendation import Recommendation, read_recommendation


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write report.html, report.md, points.csv, recommendation.json")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--quality-from", type=Path, default=None, metavar="DIR",
                   help="take drift and the accuracy gate from this other sweep (e.g. the same precisions "
                        "on a model with trained weights); the report names the model of each column")
    p.add_argument("--measured", type=Path, action="append", default=[], metavar="DIR",
                   help="a sweep of the same scenario on another GPU: its SKU is marked measured in the SKU "
                        "table, with its own figures (repeatable)")
    p.set_defaults(handler=cmd_report)


def write_and_print_report(results_dir: Path, quality_dir: Path | None = None,
                           measured_elsewhere: list[Path] | None = None,
                           analysis: tuple[pd.DataFrame, Recommendation] | None = None) -> None:
    for folder in (results_dir, quality_dir):
        torn = torn_last_line(folder / POINTS_FILE) if folder is not None else None
        if torn is not None:
            console.print(f"{folder / POINTS_FILE}:{torn}: the last point is torn (a run stopped while writing "
                          "it) and is left out of the report; rerunning the sweep measures it again",
                          style="yellow", soft_wrap=True)
    paths = write_report(results_dir, quality_dir, measured_elsewhere or [], analysis)
    console.print("report: " + ", ".join(str(p) for p in paths.values()))


def recommendation_verdict(result: Recommendation) -> tuple[bool, str]:
    """(a deployable recommendation exists, one line saying what it is or why there is none).
    A recommendation whose verification ran and failed is not deployable; one not verified
    (`--no-verify`, the sweep not finished) is, and says so."""
    rec = result.production_recommendation
    if rec is None:
        why = result.no_recommendation.reason if result.no_recommendation else "no point met the SLOs within the budget"
        return False, f"NO RECOMMENDATION: {why}"
    head = f"{rec.precision} at concurrency {rec.concurrency} ({rec.based_on.config} {rec.based_on.level})"
    v = rec.verification
    if rec.verified:
        sized = f", sized for {rec.oom_margin_sized_for_pct:.1f} %" if rec.oom_margin_sized_for_pct is not None else ""
        return True, (f"recommendation: {head}, verified (KV-pool margin under the p99 stress run "
                      f"{rec.oom_margin_pct:.1f} %{sized})")
    # A verification stored without `finished` (written before it was recorded) had finished.
    if v is not None and v.attempts and ("finished" not in v.model_fields_set or v.finished):
        return False, f"RECOMMENDATION FAILED ITS VERIFICATION: {head}: " + "; ".join(v.attempts[-1].reasons[:3])
    return True, f"recommendation: {head}, NOT verified ({(v.skipped if v else None) or 'verification not finished'})"


def announce(result: Recommendation) -> int:
    """The console banner for a sweep's outcome; EXIT_NO_RECOMMENDATION when there is nothing to deploy."""
    ok, line = recommendation_verdict(result)
    if ok:
        console.print(line, style="bold green", soft_wrap=True)
        note = (result.production_recommendation.uncertainty or {}).get("note") if result.production_recommendation else None
        if note:
            console.print(f"  uncertainty: {note}", soft_wrap=True)
        energy = result.production_recommendation.energy if result.production_recommendation else None
        if energy:
            console.print(f"  energy: {energy['j_per_output_token']:.3f} J per output token "
                          f"({energy['kwh_per_1m_output_tokens']:.3f} kWh per 1M) at {energy['gpu_power_w']:,.0f} W "
                          "mean GPU power (NVML)", soft_wrap=True)
        headroom = console_line(result.production_recommendation)
        if headroom:
            console.print(f"  {headroom}", soft_wrap=True)
        return EXIT_OK
    bar = "=" * min(100, len(line))
    console.print(f"{bar}\n{line}\n{bar}", style="bold red", soft_wrap=True)
    for d in result.no_recommendation.detail if result.no_recommendation else []:
        console.print(f"  {d}", style="red", soft_wrap=True)
    console.print(f"  (exit code {EXIT_NO_RECOMMENDATION})", style="red")
    return EXIT_NO_RECOMMENDATION


def cmd_report(args: argparse.Namespace) -> int:
    write_and_print_report(args.results_dir, args.quality_from, args.measured)
    return announce(read_recommendation(args.results_dir / RECOMMENDATION_FILE))
