"""The length-tail part of the headroom (servesweep.sweep.headroom_run.tail_risk) on a sweep's recorded
verification, without a server: predicted vs measured preemption rate and KV tokens per running
request at the recommended load, and the pool a target rate needs beside the p99 sizing.

    python bench/headroom_tail.py examples/h200-2026-12-02/sweep --out examples/h200-2026-12-02/headroom-tail.json

`--update-headroom` also puts it into the sweep's headroom.json (a tail recomputed after a fix of the
model; the load steps stay as measured).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from servesweep.results.headroom import HEADROOM_FILE, read_headroom, write_headroom
from servesweep.results.io import write_json
from servesweep.results.verification import VERIFICATION_FILE, read_verification
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep.headroom_run import VerifiedRun, tail_risk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--target", type=float, default=1.0, help="preemptions per 10k requests (default 1)")
    parser.add_argument("--update-headroom", action="store_true")
    args = parser.parse_args()
    verification = read_verification(args.sweep / VERIFICATION_FILE)
    run = VerifiedRun.from_verification(args.sweep, verification) if verification else None
    if run is None:
        print(f"{args.sweep}: no passing verification to read", file=sys.stderr)
        return 2
    tail = tail_risk(load_scenario(args.sweep / "scenario.yaml"), run, args.target)
    write_json(args.out, {"sweep": str(args.sweep), "config": run.config, "level": run.level,
                          "tail": tail.model_dump(mode="json")})
    print(tail.model_dump_json(indent=2))
    headroom = read_headroom(args.sweep / HEADROOM_FILE) if args.update_headroom else None
    if headroom is not None and headroom.config == run.config:
        headroom.tail = tail
        write_headroom(args.sweep / HEADROOM_FILE, headroom)
    return 0


if __name__ == "__main__":
    sys.exit(main())
