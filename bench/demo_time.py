"""How long `servesweep demo` takes on this machine, with each model: the wall time of the command as
a user runs it, the server's start (launch to healthy, from the run's summary.json) and the ramp.

    python bench/demo_time.py --models tiny,smollm2 --rounds 1 --out bench/results/demo_time.json

Each run is `servesweep demo --out DIR --no-progress [--model M]` in a subprocess, one after the
other (never two servers at once). The SmolLM2 model must be built already (its first fetch and
build is not the demo's time; `python -m servesweep.models.smollm2` does it) and the run says
whether it was. The README's and docs/smollm2.md's demo times quote this file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servesweep.results.io import write_json


def one_run(model: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"demo-{model}-") as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "servesweep", "demo", "--out", str(out), "--no-progress", "--model", model]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        wall_s = time.monotonic() - started
        load_after = os.getloadavg()[0]
        summary_file = out / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    server = summary.get("server") or {}
    startup_s = server.get("startup_s")
    return {
        "model": model,
        "exit_code": proc.returncode,
        "wall_s": round(wall_s, 1),
        "server_startup_s": None if startup_s is None else round(startup_s, 1),
        "after_start_s": None if startup_s is None else round(wall_s - startup_s, 1),
        # The 1-minute load average before and after: anything else running on the machine shows here.
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "completed": summary.get("completed"),
        "failed": summary.get("failed"),
        # The table's last row and the console's last words; not the "results:" line, a temporary path.
        "last_lines": [line for line in proc.stdout.strip().splitlines()[-4:] + proc.stderr.strip().splitlines()[-2:]
                       if not line.startswith("results: ")],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = []
    for round_no in range(1, args.rounds + 1):
        for model in args.models.split(","):
            run = {"round": round_no, **one_run(model)}
            print(json.dumps({k: v for k, v in run.items() if k != "last_lines"}), flush=True)
            runs.append(run)
    write_json(args.out, {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
    })
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
