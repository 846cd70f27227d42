"""`servesweep sweep SCENARIO --out DIR`: every configuration x load level, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep import auth
from servesweep.cli.common import add_auth_options, check_assertions, console
from servesweep.cli.report import announce, write_and_print_report
from servesweep.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED
from servesweep.reports.assertions import parse_assertions
from servesweep.results import SweepPoint, ensure_writable_dir
from servesweep.results.recommendation import Recommendation
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.sweep_runner import SweepRunner


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a scenario's sweep (resumable: finished points are skipped)")
    p.add_argument("scenario", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-report", action="store_true", help="skip writing the report afterwards")
    p.add_argument("--no-verify", action="store_true",
                   help="skip verifying the recommendation (it then says verified: false)")
    p.add_argument("--no-headroom", action="store_true",
                   help="skip the headroom measurement after a passing verification (the offered load stepped up "
                        "to each onset: preemption, KV use >= 95 %%, the SLO, the first failure)")
    p.add_argument("--no-progress", action="store_true")
    add_auth_options(p)
    p.add_argument("--deadline-s", type=float, default=None, metavar="S",
                   help="seconds this command may take: a verification attempt that would not fit in what is "
                        "left is not started (exit 130; the same command resumes it)")
    p.add_argument("--assert", dest="assertions", action="append", default=[], metavar="EXPR",
                   help="CI threshold on the recommended point (also `assert:` in the scenario); exit 1 on failure")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    auth.use(auth.with_scenario_key(auth.current(), scenario.api_key_env))
    assertions = parse_assertions(scenario.assertions + args.assertions)
    ensure_writable_dir(args.out)
    runner = SweepRunner(scenario, args.scenario, args.out, console,
                         show_progress=False if args.no_progress else None)
    try:
        outcome = runner.run(verify=False if args.no_verify else None, deadline_s=args.deadline_s,
                             headroom=False if args.no_headroom else None)
    except SweepInterrupted:
        console.print(f"sweep interrupted; finished points are in {args.out}/points.jsonl; "
                      "run the same command again to resume")
        return EXIT_INTERRUPTED
    points, result = outcome.points, outcome.recommendation
    failed = sum(p.status == "failed" for p in points)
    console.print(f"sweep done: {len(points)} points ({failed} failed) in {args.out}/points.jsonl")
    if not args.no_report:
        write_and_print_report(args.out, analysis=(outcome.frame, result))
    if assertions and not _check_recommended(assertions, args.out, points, result):
        announce(result)
        return EXIT_CHECK_FAILED
    return announce(result)


def _check_recommended(assertions: list, out: Path, points: list[SweepPoint], result: Recommendation) -> bool:
    rec = result.production_recommendation
    if rec is None:
        console.print("assertions: no recommended point (nothing met the SLOs): every check fails", style="red")
        return check_assertions(assertions, [("no recommendation", {})], out)
    where = rec.based_on
    point = next(p for p in points if p.config == where.config and p.level == where.level)
    # The point's figures as the report gives them: with repeats, the means over the repeats.
    return check_assertions(assertions, [(f"{where.config} {where.level}", point.figures.headline_view())], out)
