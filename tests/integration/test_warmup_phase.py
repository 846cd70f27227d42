"""Warm-up is a phase: a level's warm-up requests all finish before its measured window opens, so
they never share the server's slots with measured requests (see servesweep.loadgen.load_runner)."""

import numpy as np
import pytest

from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import read_records
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test


def config(url, tmp_path, levels, workers=1):
    return LoadTestConfig(base_url=url, out_dir=tmp_path, levels=levels, show_progress=False, workers=workers,
                          workload=Workload(input_len=16, output_len=4))


def max_in_flight(records) -> int:
    events = sorted([(r.sent_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    return int(np.cumsum([e[1] for e in events]).max())


def phases(tmp_path):
    records = list(read_records(tmp_path / "records.jsonl"))
    warm = [r for r in records if r.warmup]
    measured = [r for r in records if not r.warmup]
    assert all(r.ok for r in records)
    return warm, measured


async def test_closed_loop_warm_up_finishes_before_the_measured_window(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.03, itl_s=0.005)
    level = LoadLevel(concurrency=4, num_requests=8, warmup_requests=6)
    summary = await run_load_test(config(stub.url, tmp_path, [level]))
    warm, measured = phases(tmp_path)
    assert len(warm) == 6 and len(measured) == 8
    last_warm_end = max(r.end_s for r in warm)
    assert min(r.sent_s for r in measured) >= last_warm_end
    (entry,) = summary["levels"]
    assert last_warm_end <= entry["start_s"] <= min(r.sent_s for r in measured)
    assert entry["warmup_excluded"] == 6 and entry["completed"] == 8
    # Both phases run at the level's concurrency, never above it.
    assert max_in_flight(warm) == 4 and max_in_flight(measured) == 4
    assert summary["arrival_clock"].startswith("kernel")  # a loaded machine may leave a few reads unstamped


async def test_open_loop_warm_up_is_drained_before_the_schedule_starts(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.1, itl_s=0.0)
    level = LoadLevel(request_rate=100.0, arrival="constant", num_requests=6, warmup_requests=5)
    summary = await run_load_test(config(stub.url, tmp_path, [level]))
    warm, measured = phases(tmp_path)
    assert len(warm) == 5 and len(measured) == 6
    assert max_in_flight(warm) > 1  # warm-ups come at the level's rate, overlapping one another
    last_warm_end = max(r.end_s for r in warm)
    assert min(r.scheduled_s for r in measured) >= last_warm_end
    assert min(r.sent_s for r in measured) >= last_warm_end
    assert np.diff(sorted(r.scheduled_s for r in measured)) == pytest.approx(np.full(5, 0.01), abs=1e-6)
    assert summary["levels"][0]["start_s"] >= last_warm_end


async def test_duration_counts_from_the_end_of_warm_up(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.02, itl_s=0.0)
    level = LoadLevel(concurrency=2, duration_s=0.3, warmup_requests=4)
    summary = await run_load_test(config(stub.url, tmp_path, [level]))
    warm, measured = phases(tmp_path)
    start = summary["levels"][0]["start_s"]
    assert len(warm) == 4 and len(measured) > 4
    assert start >= max(r.end_s for r in warm)
    assert all(start <= r.sent_s < start + 0.3 for r in measured)

