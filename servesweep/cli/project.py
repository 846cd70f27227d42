"""`servesweep project`: a sweep's figures projected onto another GPU SKU, written down before
that SKU is measured; then the projection compared with the measurement.

    servesweep project RESULTS_DIR --sku SKU --out PREDICTION.json [--note TEXT ...]
    servesweep project --compare PREDICTION.json MEASURED_DIR --out TABLE.json

Each writes the .json and a .md beside it. Exit 0 when written (a comparison's figures off by
more than 20 % are flagged in the table, not in the exit code), 2 for bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console
from servesweep.errors import EXIT_OK, ConfigError
from servesweep.reports.projection import (
    ERROR_THRESHOLD_PCT,
    compare,
    comparison_markdown,
    predict,
    read_prediction,
    write_comparison,
    write_prediction,
)
from servesweep.results import ensure_writable_dir

USAGE = "give RESULTS_DIR --sku SKU, or --compare PREDICTION.json MEASURED_DIR"


def register(sub: Any) -> None:
    p = sub.add_parser("project", help="project a sweep onto another GPU SKU (datasheet ratios, each figure "
                                       "naming its rule), or compare such a projection with a measurement")
    p.add_argument("results_dir", type=Path, nargs="?", help="the measured sweep to project from")
    p.add_argument("--sku", default=None, help="the SKU to project onto (e.g. H200; see analysis/skus.py)")
    p.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("PREDICTION", "MEASURED_DIR"),
                   help=f"predicted vs measured per metric and precision; |error| > {ERROR_THRESHOLD_PCT:g} %% flagged")
    p.add_argument("--out", type=Path, required=True, help="FILE.json to write; FILE.md is written beside it")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a line for the prediction's notes (repeatable), e.g. what it was made before")
    p.set_defaults(handler=cmd_project)


def cmd_project(args: argparse.Namespace) -> int:
    if args.out.suffix != ".json":
        raise ConfigError(f"--out {args.out}: give a .json path (the .md is written beside it)")
    if args.compare is not None:
        if args.results_dir is not None or args.sku is not None or args.note:
            raise ConfigError(f"--compare takes no RESULTS_DIR, --sku or --note: {USAGE}")
        prediction_path, measured_dir = args.compare
        if args.out.resolve() == prediction_path.resolve():
            raise ConfigError(f"--out {args.out} would overwrite the prediction it is compared with: give another path")
        prediction = read_prediction(prediction_path)
        table = compare(prediction, prediction_path, measured_dir)
        ensure_writable_dir(args.out.parent)
        paths = write_comparison(table, args.out)
        console.print(comparison_markdown(table), soft_wrap=True, markup=False)
    else:
        if args.results_dir is None or args.sku is None:
            raise ConfigError(USAGE)
        prediction = predict(args.results_dir, args.sku, args.note)
        ensure_writable_dir(args.out.parent)
        paths = write_prediction(prediction, args.out)
    console.print("project: " + ", ".join(str(p) for p in paths))
    return EXIT_OK
