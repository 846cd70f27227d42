"""Where a TTFT error comes from: the stand-in's own stamps against servesweep's records.

    python bench/timing_decompose.py [--concurrency 1000] [--out DIR]

Runs the stand-in (bench/fast_server.py --stamps, TTFT 50 ms / ITL 10 ms) on core 0 and
`servesweep run` on core 1, the same workload as client_overhead.py's timing experiment, then
splits every request's TTFT error (first chunk's arrival minus request start, minus 50 ms) into:
  - server lateness: the stand-in wrote the first chunk after arrival + 50 ms;
  - delivery: the client's arrival stamp minus the stand-in's write time. On loopback this is
    ~0 when the client reads the chunk before the stream's next one arrives; a client that reads
    later gets the next chunk's kernel stamp (TCP merges the two), so it shows as 10, 20, ... ms;
  - intake: the stand-in's kernel receive time minus the client's send time.
Requests are paired in send order (loopback keeps it; the pairing residual printed shows how
well the two clocks, both CLOCK_MONOTONIC, line up). Not a unit test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
PORT = 8100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/timing-decompose"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from servesweep.models.tiny import build_tiny_model

    tokenizer = build_tiny_model()
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, str(BENCH / "fast_server.py"), "--port", str(PORT),
                               "--ttft-ms", "50", "--itl-ms", "10", "--stamps"], start_new_session=True,
                              stdout=open(a.out / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stats").read()
                break
            except OSError:
                time.sleep(0.1)
        c = a.concurrency
        subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "servesweep", "run", "--url", f"http://127.0.0.1:{PORT}",
                        "--model", "stand-in", "--concurrency", str(c), "--num-requests", str(3 * c), "--input-len", "16",
                        "--output-len", "16", "--tokenizer", str(tokenizer), "--out", str(a.out / "run"), "--no-progress",
                        "--timeout", "600"], stdout=open(a.out / "client.log", "w"), stderr=subprocess.STDOUT, check=True)
        stamps = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stamps").read())["stamps"]
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stats").read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    records = [json.loads(line) for line in open(a.out / "run" / "records.jsonl")]
    records = sorted((r for r in records if r["chunk_arrivals_s"]), key=lambda r: r["wire_s"])
    stamps = sorted(stamps, key=lambda s: s[0])
    if len(records) != len(stamps):
        print(f"{len(records)} records vs {len(stamps)} server streams: cannot pair", file=sys.stderr)
        return 1
    arrival = np.array([s[0] for s in stamps])
    wire = np.array([r["wire_s"] for r in records])
    offset = float(np.median(arrival - wire))  # the client's t0 on the shared clock
    parts = {
        "TTFT error (from request start)": [(r["chunk_arrivals_s"][0] - r["sent_s"]) * 1e3 - 50 for r in records],
        "server lateness (first chunk)": [(s[1] - s[0]) * 1e3 - 50 for s in stamps],
        "delivery (client stamp - server write)": [(r["chunk_arrivals_s"][0] + offset - s[1]) * 1e3
                                                   for r, s in zip(records, stamps)],
        "intake (server receive - client write)": list((arrival - wire - offset) * 1e3),
        "server lateness (every chunk)": [(w - (s[0] + 0.05 + 0.01 * k)) * 1e3 for s in stamps
                                          for k, w in enumerate(s[1:-1])],
    }
    result = {"concurrency": c, "stand_in_pump_busy_s": stats.get("pump_busy_s"), "parts_ms": {}}
    print(f"{c} streams, {len(records)} requests; stand-in busy writing chunks {stats.get('pump_busy_s', 0):.2f} s")
    for name, values in parts.items():
        x = np.array(values)
        row = {"p50": float(np.median(x)), "p99": float(np.percentile(x, 99)), "max": float(x.max()),
               "abs_p99": float(np.percentile(np.abs(x), 99))}
        result["parts_ms"][name] = row
        print(f"  {name:42s} p50 {row['p50']:8.3f}  p99 {row['p99']:8.3f}  max {row['max']:8.3f} ms")
    (a.out / "decompose.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
