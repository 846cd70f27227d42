"""`servesweep headroom DIR`: the headroom of a sweep's verified recommendation, on a server of
its own (what `servesweep sweep` does after a passing verification, for a sweep that did not:
an earlier version, `--no-headroom`, a run cut short). Resumable per step."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import console
from servesweep.cli.report import announce, write_and_print_report
from servesweep.errors import EXIT_INTERRUPTED, EXIT_NO_RECOMMENDATION, EXIT_OK, ConfigError
from servesweep.results import read_recommendation
from servesweep.results.headroom import HEADROOM_FILE
from servesweep.results.recommendation import RECOMMENDATION_FILE
from servesweep.results.verification import VERIFICATION_FILE, read_verification
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.headroom_run import HeadroomRun


def register(sub: Any) -> None:
    p = sub.add_parser("headroom", help="measure how far a sweep's verified recommendation is from preemption, "
                                        "the SLO edge and failure (writes headroom.json)")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--scenario", type=Path, default=None,
                   help="the scenario file (default: the copy the sweep left in RESULTS_DIR/scenario.yaml)")
    p.add_argument("--deadline-s", type=float, default=None, metavar="S",
                   help="seconds this command may take: a step that would not fit is not started (exit 130; the "
                        "same command resumes)")
    p.add_argument("--no-report", action="store_true", help="skip rewriting the report afterwards")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_headroom)


def cmd_headroom(args: argparse.Namespace) -> int:
    out: Path = args.results_dir
    scenario_path = args.scenario or out / "scenario.yaml"
    if not (out / VERIFICATION_FILE).exists():
        raise ConfigError(f"{out / VERIFICATION_FILE} does not exist: run `servesweep sweep` (with its verification) "
                          "first")
    if not scenario_path.exists():
        raise ConfigError(f"{scenario_path} does not exist: give the sweep's scenario with --scenario")
    verification = read_verification(out / VERIFICATION_FILE)
    if verification is None or not verification.passed:
        why = (verification.reason or verification.skipped) if verification else None
        console.print(f"headroom: nothing to measure, the verification did not pass ({why or 'not finished'})",
                      style="bold red", soft_wrap=True)
        return EXIT_NO_RECOMMENDATION
    run = HeadroomRun(load_scenario(scenario_path), out, console, show_progress=False if args.no_progress else None,
                      enabled=True)
    try:
        measured = run.standalone(args.deadline_s)
    except SweepInterrupted:
        console.print(f"headroom interrupted; the steps done are in {out / HEADROOM_FILE}; run the same command "
                      "again to resume")
        return EXIT_INTERRUPTED
    if measured is None:
        console.print(f"headroom: done earlier ({out / HEADROOM_FILE})")
    if args.no_report:
        return EXIT_OK
    write_and_print_report(out)
    return announce(read_recommendation(out / RECOMMENDATION_FILE))
