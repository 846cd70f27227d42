"""Production-shaped traffic through `servesweep run`: trace replay and multi-turn sessions, and CI
thresholds (`--assert`), against the stand-in server."""

import json
from pathlib import Path

import pytest

from servesweep.cli import main
from servesweep.loadgen.records import read_records
from servesweep.loadgen.traces import read_trace

TRACES = Path(__file__).resolve().parents[2] / "scenarios" / "traces"


@pytest.mark.parametrize("name", ["synthetic-mooncake.jsonl", "synthetic-azure.csv"])
def test_trace_replay_sends_every_request_at_its_offset(stub_server, tmp_path, name):
    stub = stub_server(ttft_s=0.005, itl_s=0.001)
    out = tmp_path / "trace"
    # Ten times faster than recorded: the shipped traces span ~25 s.
    assert main(["run", "--url", stub.url, "--trace", str(TRACES / name), "--trace-speed", "10",
                 "--out", str(out), "--no-progress"]) == 0
    trace = read_trace(TRACES / name, speed=10)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == len(trace) and summary["trace"]["requests"] == len(trace)
    assert summary["arrival_lateness_ms"]["count"] == len(trace)
    records = sorted(read_records(out / "records.jsonl"), key=lambda r: r.request_id)
    level_start = summary["levels"][0]["start_s"]
    offsets = [r.scheduled_s - level_start for r in records]
    assert offsets == pytest.approx([t.offset_s for t in trace], abs=1e-6)
    assert [r.output_len_requested for r in records] == [t.output_len for t in trace]


def test_multi_turn_sessions_carry_the_history_and_report_ttft_by_turn(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.005, itl_s=0.001)
    out = tmp_path / "sessions"
    assert main(["run", "--url", stub.url, "--sessions", "3", "--turns", "3", "--user-len", "16",
                 "--output-len", "8", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 9 and set(summary["ttft_by_turn_ms"]) == {"0", "1", "2"}
    records = list(read_records(out / "records.jsonl"))
    assert sorted((r.session_id, r.turn) for r in records) == [(s, t) for s in range(3) for t in range(3)]
    # Each turn's prompt holds the whole history: it grows turn by turn within a session.
    by_session = {}
    for r in records:
        by_session.setdefault(r.session_id, {})[r.turn] = r.prompt_tokens
    for turns in by_session.values():
        assert turns[0] < turns[1] < turns[2]


def test_failing_assertion_exits_1_with_the_table_and_keeps_results(stub_server, tmp_path, capsys):
    stub = stub_server(ttft_s=0.02, itl_s=0.001)
    out = tmp_path / "asserted"
    code = main(["run", "--url", stub.url, "--concurrency", "2", "--num-requests", "6", "--out", str(out),
                 "--no-progress", "--assert", "ttft_ms.p99<1", "--assert", "failed==0"])
    assert code == 1
    text = capsys.readouterr().out
    assert "ttft_ms.p99<1" in text and "FAIL" in text and "PASS" in text
    checks = json.loads((out / "assertions.json").read_text())
    assert checks["passed"] is False and (out / "summary.json").exists()


def test_bad_assertion_is_refused_before_any_load(stub_server, tmp_path, capsys):
    stub = stub_server()
    code = main(["run", "--url", stub.url, "--num-requests", "1", "--out", str(tmp_path / "o"),
                 "--assert", "tfft_ms.p99<5"])
    assert code == 2
    assert "tfft_ms" in capsys.readouterr().err and not (tmp_path / "o" / "records.jsonl").exists()
