"""`servesweep compare A B`: B against A per metric, with Welch intervals over the repeats, a
verdict, and `--fail-on-regression PCT` for CI (exit 1 on a regression, 2 when nothing could be
judged)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console, stdout_console
from servesweep.errors import EXIT_CHECK_FAILED, EXIT_OK, ConfigError
from servesweep.reports.compare import DEFAULT_CONFIDENCE, METRIC_KEYS, compare
from servesweep.reports.compare_render import console_tables, notes, write_outputs
from servesweep.results import ensure_writable_dir
from servesweep.results.comparison import write_comparison


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="is B better or worse than A beyond the noise? (two run or sweep folders, "
                                       "or PATH:LEVEL / PATH:CONFIG/LEVEL points)")
    p.add_argument("a", metavar="A", help="the baseline: a run or sweep folder, optionally :LEVEL or :CONFIG/LEVEL")
    p.add_argument("b", metavar="B", help="the candidate, as A")
    p.add_argument("--metrics", default=",".join(METRIC_KEYS), metavar="LIST",
                   help=f"comma-separated metrics to compare (default all: {', '.join(METRIC_KEYS)})")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help="confidence of the intervals and verdicts (default 0.95: 5 %% of metrics of identical "
                        "setups are flagged)")
    p.add_argument("--fail-on-regression", type=float, default=None, metavar="PCT",
                   help="exit 1 when a metric is worse beyond the noise by at least PCT %% of A's mean; exit 2 "
                        "when no metric has repeats on both sides")
    p.add_argument("--out", type=Path, default=None,
                   help="write comparison.json, .md, .html and .png here (default: no files)")
    p.set_defaults(handler=cmd_compare)


def _metrics(text: str) -> list[str]:
    wanted = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in METRIC_KEYS]
    if unknown or not wanted:
        raise ConfigError(f"--metrics: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRIC_KEYS)}")
    return wanted


def cmd_compare(args: argparse.Namespace) -> int:
    metrics = _metrics(args.metrics)
    if not 0.5 <= args.confidence < 1:
        raise ConfigError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    if args.fail_on_regression is not None and args.fail_on_regression < 0:
        raise ConfigError(f"--fail-on-regression must be >= 0, got {args.fail_on_regression}")
    out = ensure_writable_dir(args.out) if args.out is not None else None
    result = compare(args.a, args.b, metrics, args.confidence, args.fail_on_regression)
    stdout = stdout_console()
    for table in console_tables(result):
        stdout.print(table)
    for line in notes(result):
        console.print(line, style="yellow" if line.startswith("warning") else None, soft_wrap=True)
    if out is not None:
        paths = [write_comparison(out, result), *write_outputs(result, out).values()]
        console.print("comparison: " + ", ".join(str(p) for p in paths), soft_wrap=True)
    if result.gate == "fail":
        return EXIT_CHECK_FAILED
    if result.gate == "not judged":
        raise ConfigError(f"--fail-on-regression: {result.gate_detail}")
    return EXIT_OK
