"""Records v2 encoding, the per-interval drift verdict and the disk-space warning."""

import shutil
from collections import namedtuple

import orjson
import pytest

from servesweep.loadgen import disk
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.intervals import IntervalRow, drift_verdict
from servesweep.loadgen.records import RECORDS_REQUESTS, RecordWriter, RequestRecord, read_records
from servesweep.loadgen.workload import Workload


def _record(i: int = 0) -> RequestRecord:
    arrivals = [1.0203041 + 0.005 * k + 1e-7 * k for k in range(32)]
    return RequestRecord(request_id=i, level="c4", warmup=False, scheduled_s=1.0, sent_s=1.0000004,
                         wire_s=1.0001, first_token_s=arrivals[0], first_text_s=arrivals[1], end_s=arrivals[-1] + 0.001,
                         chunk_arrivals_s=arrivals, prompt_tokens=16, completion_tokens=32,
                         completion_tokens_source="usage", http_status=200)


def test_full_records_round_trip_to_the_microsecond(tmp_path):
    r = _record()
    with RecordWriter(tmp_path / "r.jsonl") as w:
        w.write(r)
    (back,) = read_records(tmp_path / "r.jsonl")
    assert back.request_id == r.request_id and back.completion_tokens == 32 and back.error_kind is None
    assert max(abs(a - b) for a, b in zip(back.chunk_arrivals_s, r.chunk_arrivals_s)) <= 0.5e-6 + 1e-12
    assert back.itl_ms == pytest.approx(r.itl_ms, abs=1.001e-3)
    assert back.ttft_ms == pytest.approx(r.ttft_ms, abs=1e-3)
    assert back.first_text_ms == pytest.approx(r.first_text_ms, abs=1e-3) and back.tokens_without_text == 0


def test_requests_records_leave_chunk_times_out_and_none_writes_no_file(tmp_path):
    r = _record()
    line = r.encode(RECORDS_REQUESTS)
    data = orjson.loads(line)
    assert "chunk_us" not in data and data["chunks"] == 32 and data["v"] == 2
    assert len(line) < len(r.encode()) < len(orjson.dumps(r.to_dict())) / 2
    with RecordWriter(tmp_path / "none.jsonl", keep="none") as w:
        w.write(r)
    assert not (tmp_path / "none.jsonl").exists() and w.count == 1


def test_version_1_records_still_read(tmp_path):
    r = _record()
    (tmp_path / "v1.jsonl").write_bytes(orjson.dumps(r.to_dict()) + b"\n")
    (back,) = read_records(tmp_path / "v1.jsonl")
    assert back.chunk_arrivals_s == r.chunk_arrivals_s and back.itl_ms == r.itl_ms


def _row(index, tok_s, ttft, failed=0, partial=False):
    return IntervalRow(level="c4", index=index, start_s=index * 60.0, end_s=index * 60.0 + 60, partial=partial,
                       completed=100, failed=failed, cancelled=0, request_throughput=1.0,
                       output_token_throughput=tok_s, ttft_p50_ms=ttft, ttft_p99_ms=ttft * 2, tpot_p50_ms=5.0,
                       tpot_p99_ms=6.0, itl_p99_ms=6.0, e2e_p99_ms=400.0, errors={})


def test_drift_verdict_compares_first_and_last_full_intervals():
    stable = drift_verdict([_row(0, 1000, 20), _row(1, 990, 21), _row(2, 980, 21.5), _row(3, 10, 500, partial=True)])
    assert stable["verdict"] == "stable" and stable["levels"]["c4"]["last_interval"] == 2
    slower = drift_verdict([_row(0, 1000, 20), _row(1, 950, 30), _row(2, 850, 26)])
    assert slower["verdict"] == "drifted"
    assert any(w.startswith("output_token_throughput -15") for w in slower["levels"]["c4"]["why"])
    assert any(w.startswith("ttft_p50_ms +30") for w in slower["levels"]["c4"]["why"])
    failing = drift_verdict([_row(0, 1000, 20), _row(1, 1000, 20, failed=3)])
    assert failing["verdict"] == "drifted" and failing["levels"]["c4"]["why"] == ["failures 0 -> 3"]
    assert drift_verdict([_row(0, 1000, 20)])["verdict"] == "not enough intervals"


def test_disk_warning_before_a_run_that_would_not_fit(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 0, 10**6))  # 1 MB free
    levels = [LoadLevel(concurrency=8, num_requests=10_000)]
    estimate = disk.check_records_space(tmp_path, levels, Workload(output_len=64), "full", None)
    assert estimate == int(10_000 * (disk.RECORD_BASE_BYTES + disk.CHUNK_BYTES * 64))
    assert "would take" in capsys.readouterr().err
    assert disk.check_records_space(tmp_path, levels, Workload(), "none", None) is None
    # closed loop for a duration: no count before the run, projected from the files' growth
    assert disk.check_records_space(tmp_path, [LoadLevel(concurrency=8, duration_s=3600)], Workload(), "full",
                                    None) is None
    watch = disk.RecordsSpaceWatch(tmp_path, [LoadLevel(concurrency=8, duration_s=3600)], "full")
    (tmp_path / "records.jsonl").write_bytes(b"x" * 100_000)
    assert watch.check(10.0) is True and "growing at" in capsys.readouterr().err
    assert watch.check(20.0) is False  # once
