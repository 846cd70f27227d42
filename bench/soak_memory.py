"""Client memory against run length, and the records' size per hour, for a soak-shaped load.

    python bench/soak_memory.py [--durations 40,160,600] [--quick]

The stand-in server (bench/fast_server.py: TTFT 20 ms, ITL 5 ms injected) on core 0, started
afresh for each run; `servesweep run --concurrency 256 --input-len 64 --output-len 64 --duration D`
on core 1 (taskset), one run per duration, all at the same load and with `--records full`.

Peak RSS is the client process's own high-water mark (`ru_maxrss` of that child, from os.wait4),
so nothing is missed between samples; RSS is also sampled every second to show its course.
Records per hour: bytes per record measured on the shortest run's records.jsonl, re-encoded under
each option (version 1 = the previous format, for comparison), times that run's measured request
rate. Not a unit test: figures depend on the machine. Writes bench/results/soak_memory.{json,md}.

    python bench/soak_memory.py --baseline /path/to/other/checkout --durations 40

runs another checkout's client (its PYTHONPATH; no --records option) at the same load and adds its
row to the committed results as `baseline`, for a before/after at the same duration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import psutil

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SERVER_CORE, CLIENT_CORE = "0", "1"
PORT = 8117
URL = f"http://127.0.0.1:{PORT}"
MODEL = "stand-in"
CONCURRENCY, INPUT_LEN, OUTPUT_LEN, TTFT_MS, ITL_MS = 256, 64, 64, 20.0, 5.0


def start_server(log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, sys.executable, str(BENCH / "fast_server.py"),
                             "--port", str(PORT), "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS),
                             "--model", MODEL], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"the stand-in server exited at start; see {log}")
        try:
            urllib.request.urlopen(URL + "/stats", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the stand-in server did not start; see {log}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def run_client(duration_s: float, out: Path, tokenizer: Path, pythonpath: str | None = None) -> dict:
    cmd = ["taskset", "-c", CLIENT_CORE, sys.executable, "-m", "servesweep", "run", "--url", URL, "--model", MODEL,
           "--concurrency", str(CONCURRENCY), "--duration", str(duration_s), "--input-len", str(INPUT_LEN),
           "--output-len", str(OUTPUT_LEN), "--tokenizer", str(tokenizer), "--out", str(out), "--no-progress",
           "--no-telemetry"] + (["--records", "full"] if pythonpath is None else [])
    env = dict(os.environ) | ({"PYTHONPATH": pythonpath} if pythonpath is not None else {})
    course: list[tuple[float, int]] = []
    start = time.monotonic()
    # `python -m` puts the working directory first on sys.path: run another checkout from inside it.
    proc = subprocess.Popen(cmd, stdout=open(out.parent / f"client-{duration_s:g}.log", "w"), stderr=subprocess.STDOUT,
                            env=env, cwd=pythonpath)
    done = threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                course.append((round(time.monotonic() - start, 1), ps.memory_info().rss))
            except psutil.NoSuchProcess:
                return
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    summary = json.loads((out / "summary.json").read_text())
    records = out / "records.jsonl"
    return {"duration_s": duration_s, "exit_code": proc.returncode, "wall_s": round(time.monotonic() - start, 1),
            "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
            "rss_course_mib": [(t, round(rss / 2**20, 1)) for t, rss in course[:: max(1, len(course) // 60)]],
            "completed": summary["completed"], "failed": summary["failed"],
            "request_throughput": summary["request_throughput"],
            "ttft_p50_ms": summary["ttft_ms"]["p50"], "ttft_p99_ms": summary["ttft_ms"]["p99"],
            "itl_p99_ms": summary["itl_ms"]["p99"], "itl_exact": summary["itl_ms"].get("exact", True),
            "ttft_exact": summary["ttft_ms"].get("exact", True),
            "records_bytes": records.stat().st_size, "records_lines": sum(1 for _ in open(records, "rb")),
            "records_dropped": summary.get("records_dropped", 0)}


def bytes_per_record(records: Path) -> dict[str, float]:
    """Mean bytes of a record under each option, re-encoding the records of a real run."""
    from servesweep.loadgen.records import RECORDS_KEEP, RequestRecord, read_records

    sizes = {keep: 0 for keep in RECORDS_KEEP} | {"v1 (before)": 0}
    n = 0
    for r in read_records(records):
        n += 1
        for keep in RECORDS_KEEP:
            sizes[keep] += len(r.encode(keep)) if keep != "none" else 0
        sizes["v1 (before)"] += len(orjson.dumps(r.to_dict())) + 1
    return {k: v / n for k, v in sizes.items()}


def run_baseline(checkout: str, durations: list[float], work: Path, tokenizer: Path) -> int:
    rows = []
    for d in durations:
        server = start_server(work / f"server-{d:g}.log")
        try:
            rows.append(run_client(d, work / f"run-{d:g}", tokenizer, pythonpath=checkout))
        finally:
            stop(server)
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "rss_course_mib"}), flush=True)
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    path = RESULTS / "soak_memory.json"
    result = json.loads(path.read_text())
    result["baseline"] = {"commit": commit, "runs": rows}
    path.write_text(json.dumps(result, indent=2))
    md = ["", f"Before (commit {commit}, the same load and machine, run afterwards):", "",
          "| duration | requests | req/s | TTFT p50 / p99 ms | ITL p99 ms | peak RSS MiB | records.jsonl MB |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['duration_s']:g} s | {r['completed']:,} | {r['request_throughput']:.0f} | "
                  f"{r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | {r['itl_p99_ms']:.2f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['records_bytes'] / 1e6:.1f} |")
    with open(RESULTS / "soak_memory.md", "a") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--durations", default="40,160,600")
    ap.add_argument("--quick", action="store_true", help="5 s and 10 s runs, results not written")
    ap.add_argument("--baseline", default=None, metavar="CHECKOUT",
                    help="run that checkout's client instead and add it to the committed results as `baseline`")
    args = ap.parse_args()
    durations = [5.0, 10.0] if args.quick else [float(d) for d in args.durations.split(",")]
    from servesweep.models.tiny import build_tiny_model

    tokenizer = build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="soak-memory-"))
    if args.baseline:
        return run_baseline(args.baseline, durations, work, tokenizer)
    runs = []
    for d in durations:
        server = start_server(work / f"server-{d:g}.log")
        try:
            runs.append(run_client(d, work / f"run-{d:g}", tokenizer))
        finally:
            stop(server)
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "rss_course_mib"}), flush=True)
    shortest = runs[0]
    per_record = bytes_per_record(work / f"run-{shortest['duration_s']:g}" / "records.jsonl")
    rate = shortest["request_throughput"]
    per_hour = {k: v * rate * 3600 for k, v in per_record.items()}
    peaks = [r["peak_rss_mib"] for r in runs]
    result = {
        "date": dt.date.today().isoformat(),
        "commit": subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "load": {"concurrency": CONCURRENCY, "input_len": INPUT_LEN, "output_len": OUTPUT_LEN, "ttft_ms": TTFT_MS,
                 "itl_ms": ITL_MS, "server_core": SERVER_CORE, "client_core": CLIENT_CORE, "records": "full"},
        "runs": runs,
        "peak_rss_max_over_min": max(peaks) / min(peaks),
        "bytes_per_record": per_record,
        "records_per_hour_bytes": per_hour,
        "records_per_hour_basis": f"bytes per record of the {shortest['duration_s']:g} s run's records re-encoded "
                                  f"per option x its measured {rate:.1f} requests/s",
    }
    md = ["# Client memory vs run length (bench/soak_memory.py)", "",
          f"{result['date']}, {result['host']['platform']}, {os.cpu_count()} cores. Stand-in server "
          f"(bench/fast_server.py, TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms injected) on core {SERVER_CORE}; "
          f"`servesweep run --concurrency {CONCURRENCY} --input-len {INPUT_LEN} --output-len {OUTPUT_LEN} "
          f"--records full --duration D` on core {CLIENT_CORE}, at commit {result['commit']}. Measured, one run each; "
          "raw figures in soak_memory.json.", "",
          "| duration | requests | req/s | TTFT p50 / p99 ms | ITL p99 ms | peak RSS MiB | records.jsonl MB | records dropped |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        md.append(f"| {r['duration_s']:g} s | {r['completed']:,} | {r['request_throughput']:.0f} | "
                  f"{r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | {r['itl_p99_ms']:.2f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['records_bytes'] / 1e6:.1f} | {r['records_dropped']} |")
    md += ["", f"Peak RSS, largest / smallest: **{result['peak_rss_max_over_min']:.2f}x** (goal: within 1.25x).", "",
           "| --records | bytes per request | per hour at this rate |", "|---|---:|---:|"]
    for k, v in per_record.items():
        md.append(f"| {k} | {v:.0f} | {per_hour[k] / 1e9:.2f} GB |")
    md += ["", f"Per hour: {result['records_per_hour_basis']} (a projection from measured parts).", ""]
    print("\n".join(md))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak_memory.json").write_text(json.dumps(result, indent=2))
        (RESULTS / "soak_memory.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
