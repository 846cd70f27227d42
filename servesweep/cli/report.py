"""`servesweep report DIR`: report.html, report.md, points.csv, plots and recommendation.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console
from servesweep.errors import EXIT_OK
from servesweep.reports.render import write_report


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
                           measured_elsewhere: list[Path] | None = None) -> None:
    paths = write_report(results_dir, quality_dir, measured_elsewhere or [])
    console.print("report: " + ", ".join(str(p) for p in paths.values()))


def cmd_report(args: argparse.Namespace) -> int:
    write_and_print_report(args.results_dir, args.quality_from, args.measured)
    return EXIT_OK
