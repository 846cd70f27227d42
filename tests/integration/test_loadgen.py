"""The load generator against the in-process stand-in server, whose timings are known.

Tolerances are generous: this checks that timings are measured correctly, not how fast.
"""

import asyncio
import json

import numpy as np
import pytest

from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import read_records
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.target import TargetError
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test

SUMMARY_KEYS = {"completed", "failed", "duration_s", "request_throughput", "output_token_throughput",
                "total_token_throughput", "ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"}
DIST_KEYS = {"mean", "std", "p50", "p90", "p95", "p99", "max"}


def config(url, tmp_path, levels, **workload):
    return LoadTestConfig(base_url=url, out_dir=tmp_path, levels=levels, show_progress=False,
                          workload=Workload(**({"input_len": 32, "output_len": 8} | workload)))


async def test_measured_timings_track_injected_ones(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.05, itl_s=0.01)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=4, num_requests=16)],
                                         output_len=10))
    assert summary["completed"] == 16 and summary["failed"] == 0
    assert summary["ttft_ms"]["p50"] == pytest.approx(50, abs=15)
    assert summary["itl_ms"]["p50"] == pytest.approx(10, abs=5)
    assert summary["tpot_ms"]["p50"] == pytest.approx(10, abs=5)
    assert summary["e2e_ms"]["p50"] == pytest.approx(50 + 9 * 10, abs=30)
    assert summary["itl_ms"]["count"] == 16 * 9  # every gap, not an average per request


async def test_summary_and_record_schema(stub_server, tmp_path):
    stub = stub_server()
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=6)]))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert SUMMARY_KEYS <= on_disk.keys()
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        assert DIST_KEYS <= on_disk[key].keys()
    for key in ("tool", "target", "workload", "seed", "started_at", "ended_at", "host"):
        assert key in on_disk
    assert on_disk["target"]["model"] == "stub-model"
    records = list(read_records(tmp_path / "records.jsonl"))
    assert len(records) == 6
    raw = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    # Version 2: None fields left out, chunk times as integer microsecond gaps.
    assert raw["v"] == 2 and on_disk["records"] == {"keep": "full", "version": 2}
    for key in ("scheduled_s", "sent_s", "first_token_s", "end_s", "chunk_us", "chunks", "prompt_tokens",
                "completion_tokens", "http_status", "ttft_ms", "tpot_ms", "e2e_ms"):
        assert key in raw
    assert "error_kind" not in raw and all(isinstance(gap, int) for gap in raw["chunk_us"])
    first = next(r for r in records if r.request_id == raw["request_id"])
    assert len(first.chunk_arrivals_s) == raw["chunks"] == 8
    assert abs(first.chunk_arrivals_s[0] - raw["first_token_s"]) <= 0.5e-6
    # Prompts were built to an exact token count through the server's /tokenize.
    assert all(r.prompt_tokens == r.prompt_len_requested == 32 for r in records)
    assert all(r.completion_tokens == 8 for r in records)
    assert summary["tokenizer"] == "ServerTokenizer"


async def test_rerun_into_the_same_directory_keeps_the_earlier_run_apart(stub_server, tmp_path):
    stub = stub_server()
    await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)]))
    await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=6)]))
    assert len(list(read_records(tmp_path / "records.jsonl"))) == 6  # this run only
    earlier = list((tmp_path / "previous").iterdir())
    assert len(earlier) == 1
    assert len(list(read_records(earlier[0] / "records.jsonl"))) == 4
    assert json.loads((earlier[0] / "summary.json").read_text())["completed"] == 4


@pytest.mark.parametrize("endpoint,stream", [("completions", False), ("chat", True), ("chat", False)])
async def test_endpoints_and_non_streaming(stub_server, tmp_path, endpoint, stream):
    stub = stub_server(ttft_s=0.02, itl_s=0.005)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)],
                                         endpoint=endpoint, stream=stream, output_len=6))
    assert summary["completed"] == 4 and summary["failed"] == 0
    assert summary["total_output_tokens"] == 24
    if not stream:
        # Without streaming the whole answer arrives at once.
        assert summary["ttft_ms"]["p50"] == pytest.approx(summary["e2e_ms"]["p50"], rel=0.01)
    else:
        assert summary["itl_ms"]["count"] == 4 * 5


@pytest.mark.parametrize("mode,kind,text", [
    ("malformed", "stream_error", "malformed JSON"),
    ("error_event", "stream_error", "engine died mid-stream"),
    ("drop", "stream_error", ""),
    ("http_error", "http_error", "stub refuses this request"),
])
async def test_broken_streams_are_recorded_with_a_reason(stub_server, tmp_path, mode, kind, text):
    stub = stub_server(mode=mode, fail_after_chunks=2)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)]))
    assert summary["failed"] == 4 and summary["completed"] == 0
    assert summary["errors"] == {kind: 4}
    assert text in summary["error_examples"][kind]
    assert len(list(read_records(tmp_path / "records.jsonl"))) == 4


async def test_prompt_longer_than_context_records_the_servers_message(stub_server, tmp_path):
    # A server that does not report its max_model_len: the lengths cannot be checked before the
    # load, and the server's own refusal is recorded per request.
    listing = '{"object":"list","data":[{"id":"stub-model","object":"model"}]}'
    stub = stub_server(max_model_len=64, models_body=listing)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=2)],
                                         input_len=100))
    assert summary["errors"] == {"http_error": 2}
    assert "maximum context length is 64" in summary["error_examples"]["http_error"]
    assert summary["context_limit"]["source"].startswith("servesweep's ceiling")


async def test_open_loop_rate_and_max_concurrency(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.2, itl_s=0.0)
    level = LoadLevel(request_rate=40.0, arrival="constant", max_concurrency=3, num_requests=12)
    await run_load_test(config(stub.url, tmp_path, [level], output_len=2))
    records = list(read_records(tmp_path / "records.jsonl"))
    scheduled = np.array(sorted(r.scheduled_s for r in records))
    assert np.diff(scheduled) == pytest.approx(np.full(11, 0.025), abs=1e-6)
    # With 3 in flight and 0.2 s each, sends lag the schedule: the cap held.
    events = sorted([(r.sent_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    in_flight = np.cumsum([e[1] for e in events])
    assert in_flight.max() <= 3


async def test_duration_bound_and_ramp_of_levels(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.01, itl_s=0.002)
    levels = [LoadLevel(concurrency=1, duration_s=0.5), LoadLevel(concurrency=4, duration_s=0.5, warmup_requests=2)]
    summary = await run_load_test(config(stub.url, tmp_path, levels))
    assert [lv["label"] for lv in summary["levels"]] == ["c1", "c4"]
    for lv in summary["levels"]:
        assert lv["completed"] > 3
        assert lv["end_s"] - lv["start_s"] < 2.0
    assert summary["levels"][1]["warmup_excluded"] == 2
    assert summary["levels"][1]["request_throughput"] > summary["levels"][0]["request_throughput"]


async def test_goodput_in_summary(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.03)
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)])
    cfg.slo = SLO(ttft_ms=10_000)
    assert (await run_load_test(cfg))["goodput"]["good_requests"] == 4
    cfg.slo = SLO(ttft_ms=1)
    assert (await run_load_test(cfg))["goodput"]["good_requests"] == 0


async def test_dead_url_fails_fast_naming_it(tmp_path):
    from servesweep.backends.process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TargetError, match=url.replace(".", r"\.")):
        await run_load_test(config(url, tmp_path, [LoadLevel(concurrency=4, num_requests=1000)]))
    assert loop.time() - start < 5


async def test_wrong_path_and_unknown_model_are_named(stub_server, tmp_path):
    stub = stub_server()
    with pytest.raises(TargetError, match="HTTP 404"):
        await run_load_test(config(stub.url + "/nope", tmp_path, [LoadLevel(concurrency=1, num_requests=1)]))
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=1)])
    cfg.model = "other"
    with pytest.raises(TargetError, match="serves: stub-model"):
        await run_load_test(cfg)


async def test_non_loopback_target_is_refused(tmp_path):
    with pytest.raises(TargetError, match="not a loopback address"):
        await run_load_test(config("http://192.0.2.1:8000", tmp_path, [LoadLevel(concurrency=1, num_requests=1)]))


async def test_soak_intervals_are_written_as_the_run_goes_and_add_up_to_the_run(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.01, itl_s=0.002)
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=4, duration_s=2.2)]).model_copy(
        update={"report_interval_s": 0.5, "records": "requests"})
    summary = await run_load_test(cfg)
    rows = [json.loads(line) for line in (tmp_path / "intervals.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows))) and len(rows) >= 4
    assert all(not r["partial"] for r in rows[:4]) and all(r["schema_version"] == 1 for r in rows)
    assert all(r["start_s"] == pytest.approx(p["end_s"]) for p, r in zip(rows, rows[1:]))  # back to back
    # Every measured request completed in exactly one interval.
    assert sum(r["completed"] for r in rows) == summary["completed"]
    assert all(r["ttft_p50_ms"] == pytest.approx(10, abs=5) for r in rows if r["completed"])
    soak = summary["soak"]
    assert soak["intervals"] == len(rows) and soak["verdict"] in ("stable", "drifted")
    assert (tmp_path / "intervals.png").stat().st_size > 0
    # --records requests: no chunk times on disk, the summary's ITL is complete all the same.
    raw = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    assert "chunk_us" not in raw and raw["chunks"] == 8
    assert summary["itl_ms"]["count"] == 7 * summary["completed"]
    assert summary["records"] == {"keep": "requests", "version": 2}


async def test_records_none_writes_no_records_and_a_full_summary(stub_server, tmp_path):
    stub = stub_server()
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=6)]).model_copy(update={"records": "none"})
    summary = await run_load_test(cfg)
    assert not (tmp_path / "records.jsonl").exists()
    assert summary["completed"] == 6 and summary["ttft_ms"]["count"] == 6
