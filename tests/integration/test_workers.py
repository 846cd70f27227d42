"""`--workers N`: the load split over processes, records merged, statistics of the union."""

import json

import pytest

from servesweep.cli import main
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import read_records
from servesweep.loadgen.stats import summarize
from servesweep.loadgen.workers import WorkerSplitError, split_level, worker_records_path


def test_levels_split_evenly_and_completely():
    shares = split_level(LoadLevel(concurrency=10, num_requests=101, warmup_requests=3), 3)
    assert [s.concurrency for s in shares] == [4, 3, 3]
    assert [s.num_requests for s in shares] == [34, 34, 33]
    assert [s.warmup_requests for s in shares] == [1, 1, 1]
    open_loop = split_level(LoadLevel(request_rate=90, arrival="constant", duration_s=5, max_concurrency=7), 3)
    assert [s.request_rate for s in open_loop] == [30, 30, 30]
    assert [s.max_concurrency for s in open_loop] == [3, 2, 2]
    assert all(s.duration_s == 5 and s.arrival == "constant" for s in open_loop)
    with pytest.raises(WorkerSplitError, match="concurrency 2 < 4 workers"):
        split_level(LoadLevel(concurrency=2, num_requests=10), 4)


def test_two_workers_merge_into_one_result(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.005, itl_s=0.001)
    out = tmp_path / "res"
    code = main(["run", "--url", stub.url, "--workers", "2", "--concurrency", "3,6", "--num-requests", "20",
                 "--input-len", "16", "--output-len", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["merged_equals_union"] is True
    assert summary["workers"]["records_per_worker"] == [20, 20]  # 10 + 10 per level and worker
    assert summary["completed"] == 40 and [lv["completed"] for lv in summary["levels"]] == [20, 20]

    # Independently of the built-in check: the union of the workers' files gives the same statistics.
    union = [r for i in range(2) for r in read_records(worker_records_path(out, i))]
    merged = list(read_records(out / "records.jsonl"))
    assert sorted(r.request_id for r in union) == [r.request_id for r in merged]
    assert len({r.request_id for r in merged}) == 40
    stats = summarize([r for r in union if r.level == "c6"])
    level = summary["levels"][1]
    # The summary comes from the workers' in-memory statistics, the files hold times to the microsecond:
    # the same numbers to within that microsecond (a 2 us slack: TTFT is a difference of two times).
    assert stats["ttft_ms"] == pytest.approx(level["ttft_ms"], abs=2e-3) and stats["completed"] == level["completed"]
    # Throughput divides by the span from first send to last end: each end is rounded to the
    # microsecond in the files, so the span may differ by up to 1 us (rel 1.5e-5 on a 66 ms span).
    assert stats["duration_s"] == pytest.approx(level["duration_s"], abs=1.01e-6)
    assert stats["output_token_throughput"] == pytest.approx(level["output_token_throughput"],
                                                             rel=1.01e-6 / level["duration_s"])
    # One clock for every process: each worker's requests fall inside the level's window.
    for lv in summary["levels"]:
        in_level = [r for r in merged if r.level == lv["label"]]
        assert all(lv["start_s"] <= r.sent_s <= r.end_s <= lv["end_s"] + 1e-6 for r in in_level)
        assert {r.request_id % 2 for r in in_level} == {0, 1}  # both workers sent at every level


def test_open_loop_rate_is_split_and_staggered(stub_server, tmp_path):
    stub = stub_server()
    out = tmp_path / "res"
    assert main(["run", "--url", stub.url, "--workers", "2", "--request-rate", "40", "--arrival", "constant",
                 "--num-requests", "40", "--input-len", "8", "--output-len", "2", "--out", str(out),
                 "--no-progress"]) == 0
    merged = sorted(read_records(out / "records.jsonl"), key=lambda r: r.scheduled_s)
    gaps = [b.scheduled_s - a.scheduled_s for a, b in zip(merged, merged[1:])]
    # Two workers at 20 req/s each, half a gap apart: one arrival every 25 ms overall.
    assert sum(gaps) / len(gaps) == pytest.approx(0.025, rel=0.1)
    assert min(gaps) > 0.015


def test_too_many_workers_is_a_one_line_error(stub_server, tmp_path, capsys):
    stub = stub_server()
    assert main(["run", "--url", stub.url, "--workers", "4", "--concurrency", "2", "--num-requests", "8",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    assert "concurrency 2 < 4 workers" in capsys.readouterr().err


def test_sigterm_stops_every_worker_and_keeps_merged_records(stub_server, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    stub = stub_server(ttft_s=0.01, itl_s=0.002)
    proc = subprocess.Popen(
        [sys.executable, "-m", "servesweep", "run", "--url", stub.url, "--workers", "2", "--concurrency", "4",
         "--num-requests", "5000", "--output-len", "50", "--input-len", "16", "--out", str(tmp_path),
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("records.worker-*.jsonl"))
        if done >= 8:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # interrupted
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["abort_reason"] == "interrupted by signal"
    assert summary["workers"]["merged_equals_union"] is True
    assert summary["completed"] >= 8 and summary["failed"] == 0


def test_workers_ship_their_statistics_so_records_none_keeps_a_full_summary(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.005, itl_s=0.001)
    out = tmp_path / "res"
    assert main(["run", "--url", stub.url, "--workers", "2", "--concurrency", "4", "--num-requests", "20",
                 "--input-len", "16", "--output-len", "8", "--out", str(out), "--no-progress",
                 "--records", "none"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not (out / "records.jsonl").exists() and not worker_records_path(out, 0).exists()
    assert summary["completed"] == 20 and summary["itl_ms"]["count"] == 20 * 7
    assert summary["workers"]["merged_equals_union"] is None  # nothing on disk to compare
