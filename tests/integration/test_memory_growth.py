"""Client memory does not grow with the run's length (issue 36): 10,000 requests against the
stand-in server, memory measured with tracemalloc inside the client's own process (under an
address-space limit), between its 2,000th and 12,000th record.

Stated bound, per 10,000 requests: under 3 MiB in all, and under 1 MiB for everything but the
latency distributions' exact values. Those keep 8 bytes per value by design up to 131,072 values
each (1 MiB) before folding into a fixed histogram: at 8 output tokens a request that is about
12 values, ~1 MB per 10,000 requests, bounded once folded. A client that kept each request's
record (~1 KB with its chunk times) would grow ~10 MB; the second test shows the probe sees that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("memory_probe.py")
FIRST, LAST = 2_000, 12_000
BOUND_TOTAL, BOUND_REST = 3 * 2**20, 1 * 2**20


def _probe(url: str, out: Path, first: int, last: int, *extra: str) -> dict:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(PROBE), url, str(out), str(first), str(last), *extra],
                          capture_output=True, text=True, timeout=600, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0 and result["completed"] == last + 64
    per_10k = 10_000 / result["requests"]
    return {**result, "growth_bytes": result["growth_bytes"] * per_10k,
            "growth_without_distributions_bytes": result["growth_without_distributions_bytes"] * per_10k}


def test_memory_per_10000_requests_stays_under_the_bound(stub_server, tmp_path):
    stub = stub_server()
    result = _probe(stub.url, tmp_path / "run", FIRST, LAST)
    print(result)  # the measured growth, shown with -rA
    assert result["growth_without_distributions_bytes"] < BOUND_REST, result
    assert result["growth_bytes"] < BOUND_TOTAL, result


def test_the_probe_sees_a_client_that_keeps_its_records(stub_server, tmp_path):
    stub = stub_server()
    result = _probe(stub.url, tmp_path / "run", 1_000, 3_500, "--keep-records")  # shorter: it grows fast
    print(result)
    assert result["growth_without_distributions_bytes"] > 3 * BOUND_REST, result
