"""`servesweep sweep SCENARIO --out DIR`: every configuration x load level, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console
from servesweep.cli.report import write_and_print_report
from servesweep.errors import EXIT_INTERRUPTED, EXIT_OK
from servesweep.results import ensure_writable_dir
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep.runner import SweepInterrupted, SweepRunner


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a scenario's sweep (resumable: finished points are skipped)")
    p.add_argument("scenario", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-report", action="store_true", help="skip writing the report afterwards")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    ensure_writable_dir(args.out)
    runner = SweepRunner(scenario, args.scenario, args.out, console,
                         show_progress=False if args.no_progress else None)
    try:
        points = runner.run()
    except SweepInterrupted:
        console.print(f"sweep interrupted; finished points are in {args.out}/points.jsonl; "
                      "run the same command again to resume")
        return EXIT_INTERRUPTED
    failed = sum(p["status"] == "failed" for p in points)
    console.print(f"sweep done: {len(points)} points ({failed} failed) in {args.out}/points.jsonl")
    if not args.no_report:
        write_and_print_report(args.out)
    return EXIT_OK
