"""Reliability, round 3 (issue 22): each case a server (or a disk, or a file) gets wrong, against the
stand-in servers, with the outcome servesweep promises. No timed assertions: a case that would
hang instead fails on its own timeout's error (or pytest's)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from servesweep import errors
from servesweep.cli import main
from servesweep.loadgen import load_runner as runner_module
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.http import HttpPool, ServerDisconnected
from servesweep.loadgen.records import RecordWriter, read_records
from servesweep.loadgen.sessions import SessionSpec
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test

uvloop = pytest.importorskip("uvloop")
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def config(url, out, levels, **workload):
    return LoadTestConfig(base_url=url, out_dir=out, levels=levels, show_progress=False,
                          workload=Workload(**({"input_len": 16, "output_len": 8} | workload)))


def run_on(loop: str, coro):
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(coro)


class Collect:
    def __init__(self, on_first_body=None):
        self.status, self.body, self.completed = None, b"", None
        self.on_first_body = on_first_body

    def on_sent(self, now):
        pass

    def on_status(self, status, reason):
        self.status = status

    def on_body(self, data, now):
        first = not self.body
        self.body += data
        if first and self.on_first_body is not None:
            self.on_first_body()

    def on_complete(self, now):
        self.completed = now


class SinkServer:
    """A TCP listener that only counts the connections made to it: where a followed redirect would go."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sink():
    server = SinkServer()
    yield server
    server.close()


# --- 1. a TCP reset mid-stream ends the request at once, under both event loops --------------------

@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_reset_behind_unread_bytes_ends_the_exchange_as_a_disconnect(loop):
    # The last chunk and the RST arrive together while the client's loop is busy: uvloop then sees
    # EPOLLERR, runs the reader once (the chunk) and stops polling the socket; the error behind
    # the chunk must still end the exchange, not the 60-second timeout.
    chunk = b'data: {"choices":[{"text":"x"}]}\n\n'
    first_read, reset_sent = threading.Event(), threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(chunk), chunk))
        first_read.wait(10)
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        reset_sent.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def hold_the_loop() -> None:  # the client is busy while the chunk and the reset land
        first_read.set()
        reset_sent.wait(10)

    async def go():
        async with HttpPool(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=60) as pool:
            handler = Collect(on_first_body=hold_the_loop)
            with pytest.raises(ServerDisconnected, match="reset"):
                await pool.request(pool.encode_post("/v1/completions", b"{}"), handler)
            return handler, len(pool._all)

    handler, connections = run_on(loop, go())
    thread.join(5)
    listener.close()
    assert handler.status == 200 and handler.body.count(b"data:") == 2 and handler.completed is None
    assert connections == 0  # the reset connection is gone from the pool


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_run_with_every_second_response_reset_finishes_with_those_as_errors(stub_server, tmp_path, loop):
    stub = stub_server(mode="reset", reset_every=2, fail_after_chunks=2, itl_s=0.002)
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=8)], request_timeout_s=60)
    summary = run_on(loop, run_load_test(cfg))
    assert summary["abort_reason"] is None  # the server is alive: resets are the requests' failures
    assert summary["completed"] == 4 and summary["failed"] == 4
    assert summary["errors"] == {"stream_error": 4}
    assert "server closed the connection" in summary["error_examples"]["stream_error"]
    assert len(list(read_records(tmp_path / "records.jsonl"))) == 8


# --- 2. redirects are not followed, control plane included -------------------------------------------

@pytest.mark.parametrize("path", ["/v1/models", "/tokenize"])
async def test_a_redirect_from_the_control_plane_is_named_not_followed(stub_server, sink, tmp_path, path):
    stub = stub_server(redirect_paths=(path,), redirect_to=sink.url)
    with pytest.raises(errors.TargetError, match=f"HTTP 307, a redirect to {sink.url}{path}; servesweep does not "
                                                 "follow redirects"):
        await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=2)]))
    assert sink.accepted == 0 and stub.behaviour.completion_calls == 0


def test_a_redirect_from_metrics_is_named_not_followed(stub_server, sink):
    from servesweep.backends.detect import detect_metrics
    from servesweep.backends.telemetry import PrometheusReader
    from servesweep.backends.vllm import METRICS

    stub = stub_server(metrics=True, redirect_paths=("/metrics", "/prometheus/metrics"), redirect_to=sink.url)
    reader, note = detect_metrics(stub.url)
    assert reader is None and f"a redirect to {sink.url}/metrics" in note
    with pytest.raises(OSError, match="does not follow redirects"):
        PrometheusReader(stub.url + "/metrics", METRICS).read()
    assert sink.accepted == 0


def test_cli_run_refuses_a_redirected_model_list_with_exit_2(stub_server, sink, tmp_path, capsys):
    stub = stub_server(redirect_paths=("/v1/models",), redirect_to=sink.url)
    code = main(["run", "--url", stub.url, "--num-requests", "2", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and "does not follow redirects" in capsys.readouterr().err
    assert sink.accepted == 0


# --- 3. a dead server is detected whatever is left to send -----------------------------------------

async def _wait_for_records(path: Path, n: int) -> None:
    while not (path.exists() and len(path.read_bytes().splitlines()) >= n):
        await asyncio.sleep(0.01)


async def _kill(stub) -> None:
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stub.runner.cleanup(), stub.loop))


async def test_server_dying_with_few_requests_left_sets_abort_reason(stub_server, tmp_path):
    stub = stub_server(itl_s=0.02)
    run = asyncio.create_task(run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=5)],
                                                   output_len=20)))
    await asyncio.wait_for(_wait_for_records(tmp_path / "records.jsonl", 1), 30)
    await _kill(stub)
    summary = await asyncio.wait_for(run, 60)
    assert summary["abort_kind"] == "server"
    assert summary["abort_reason"].startswith(f"server stopped answering: {stub.url}/v1/models cannot be reached")
    assert summary["failed"] >= 1


async def test_server_dying_during_sessions_reports_the_turns_never_sent(stub_server, tmp_path):
    stub = stub_server(itl_s=0.01)
    spec = SessionSpec(sessions=2, turns=6, user_len="8", output_len="10")
    cfg = LoadTestConfig(base_url=stub.url, out_dir=tmp_path, show_progress=False, sessions=spec,
                         workload=Workload(endpoint="chat", output_len=10),
                         levels=[LoadLevel(concurrency=2, arrival="sessions", num_requests=12, name="sessions")])
    run = asyncio.create_task(run_load_test(cfg))
    await asyncio.wait_for(_wait_for_records(tmp_path / "records.jsonl", 2), 30)
    await _kill(stub)
    summary = await asyncio.wait_for(run, 60)
    assert summary["abort_kind"] == "server" and "server stopped answering" in summary["abort_reason"]
    outcome = summary["sessions_outcome"]
    sent = len(list(read_records(tmp_path / "records.jsonl")))
    assert outcome["planned_turns"] == 12 and outcome["sent_turns"] == sent
    assert outcome["skipped_turns"] == 12 - sent > 0
    assert any(f"{12 - sent} of 12 planned session turns were never sent" in w for w in summary["warnings"])
    assert summary["levels"][0]["sessions_outcome"] == outcome


async def test_frozen_server_is_detected_in_seconds_by_the_watchdog(stub_server, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "QUIET_PROBE_S", 0.5)
    monkeypatch.setattr(runner_module, "PROBE_TIMEOUT_S", 0.5)
    stub = stub_server(itl_s=0.02)
    run = asyncio.create_task(run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=50)],
                                                   output_len=20, request_timeout_s=300)))
    await asyncio.wait_for(_wait_for_records(tmp_path / "records.jsonl", 1), 30)
    release = stub.freeze()
    try:
        summary = await asyncio.wait_for(run, 60)  # not 3 x 300 s
    finally:
        release.set()
    reason = summary["abort_reason"]
    assert reason.startswith("server stopped answering: none of the 2 requests in flight received a byte"), reason
    assert f"{stub.url}/v1/models did not answer within 0.5 s" in reason
    assert "timeout" not in summary["errors"]


async def test_response_held_open_after_done_is_complete_at_done(stub_server, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "HELD_OPEN_S", 0.2)
    stub = stub_server(mode="held_open")
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)],
                                         request_timeout_s=120))
    assert summary["completed"] == 4 and summary["errors"] == {}
    assert summary["held_open_after_done"] == 4
    assert any("held open by the server after 'data: [DONE]'" in w for w in summary["warnings"])


async def test_html_on_the_completions_endpoint_is_named_html(stub_server, tmp_path):
    stub = stub_server(mode="html")
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=2)]))
    assert summary["errors"] == {"stream_error": 2}
    assert summary["error_examples"]["stream_error"].startswith("the server answered HTML, not an event stream")


# --- 4. lengths against the server's context ---------------------------------------------------------

async def test_lengths_past_max_model_len_are_refused_before_any_load(stub_server, tmp_path):
    stub = stub_server(max_model_len=4096)
    with pytest.raises(errors.ConfigError) as info:
        await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=4)],
                                   input_len=5000, output_len=64))
    message = str(info.value)
    assert "--input-len 5000 + --output-len 64 ask for 5,064 tokens per request" in message
    assert f"context of 4,096 tokens (max_model_len reported by {stub.url}/v1/models)" in message
    assert info.value.exit_code == errors.EXIT_USAGE
    assert stub.behaviour.completion_calls == 0 and stub.behaviour.tokenize_calls == 0


def test_cli_a_huge_input_len_is_one_line_exit_2_without_building_it(capsys, tmp_path):
    code = main(["run", "--url", "http://127.0.0.1:9", "--input-len", "100000000", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "100,000,000 tokens is more than any model's context" in err


async def test_a_distribution_tail_past_the_context_is_clipped_and_said(stub_server, tmp_path):
    stub = stub_server(max_model_len=200)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=40)],
                                         input_len="uniform:20:300", output_len=8, seed=3))
    # Without clipping about half would be refused by the server (prompt + output > 200).
    assert summary["completed"] == 40 and summary["failed"] == 0
    clipped = summary["lengths_clipped"]
    assert 0 < clipped["prompts"] < clipped["of"] and clipped["limit"]["tokens"] == 200
    assert summary["levels"][0]["lengths_clipped"] == clipped["prompts"]
    assert any("are clipped" in w and f"{clipped['prompts']} of {clipped['of']} prompts clipped" in w
               for w in summary["warnings"])
    assert all(r.prompt_len_requested + r.output_len_requested <= 200 for r in read_records(tmp_path / "records.jsonl"))


def _trace(path: Path, lengths: list[tuple[int, int]]) -> Path:
    path.write_text("".join(json.dumps({"timestamp": i * 10, "input_length": i_len, "output_length": o_len}) + "\n"
                            for i, (i_len, o_len) in enumerate(lengths)))
    return path


async def test_trace_rows_past_the_context_are_clipped_or_the_trace_refused(stub_server, tmp_path):
    stub = stub_server(max_model_len=200)
    trace = _trace(tmp_path / "t.jsonl", [(20, 8), (100_000_000 // 100, 8), (30, 8), (40, 4)])
    level = [LoadLevel(request_rate=100, arrival="trace", num_requests=4, name="trace")]
    cfg = config(stub.url, tmp_path / "a", level).model_copy(update={"trace_file": trace})
    summary = await run_load_test(cfg)
    assert summary["completed"] == 4
    assert any("1 of 4 requests asked for more than the model's context of 200 tokens" in w
               for w in summary["warnings"])
    most = _trace(tmp_path / "m.jsonl", [(500, 8), (600, 8), (30, 8)])
    with pytest.raises(errors.ConfigError, match="2 of 3 requests ask for more tokens than the model's context"):
        await run_load_test(cfg.model_copy(update={"trace_file": most, "out_dir": tmp_path / "b"}))
    assert stub.behaviour.completion_calls == 4


def test_a_trace_spanning_decades_is_refused(tmp_path, capsys):
    trace = _trace(tmp_path / "t.jsonl", [(10, 4), (10, 4)])
    lines = trace.read_text().splitlines()
    lines[1] = lines[1].replace('"timestamp": 10', '"timestamp": 1000000000000')  # 31.7 years, in ms
    trace.write_text("\n".join(lines) + "\n")
    code = main(["run", "--url", "http://127.0.0.1:9", "--trace", str(trace), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "replaying it would take 31.7 years" in err and err.count("\n") == 1


async def test_sessions_stop_before_the_turn_that_would_not_fit(stub_server, tmp_path):
    stub = stub_server(max_model_len=100)
    spec = SessionSpec(sessions=2, turns=5, user_len="uniform:10:30", output_len="8")
    cfg = LoadTestConfig(base_url=stub.url, out_dir=tmp_path, show_progress=False, sessions=spec,
                         workload=Workload(endpoint="chat", output_len=8),
                         levels=[LoadLevel(concurrency=2, arrival="sessions", num_requests=10, name="sessions")])
    summary = await run_load_test(cfg)
    outcome = summary["sessions_outcome"]
    assert outcome["clipped_turns"] > 0 and outcome["planned_turns"] == 10
    assert outcome["sent_turns"] + outcome["clipped_turns"] == 10 and summary["failed"] == 0
    assert any("would not fit the model's context of 100 tokens" in w for w in summary["warnings"])


# --- 5. a full disk ---------------------------------------------------------------------------------

def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_out_on_a_full_disk_is_refused_before_any_request(stub_server, tmp_path, monkeypatch, capsys):
    import servesweep.results.summary as results

    monkeypatch.setattr(results.os, "fsync", _enospc)  # an empty file still fits; the data does not
    stub = stub_server()
    code = main(["run", "--url", stub.url, "--num-requests", "2", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable: No space left on device" in err and err.count("\n") == 1
    assert stub.behaviour.completion_calls == 0 and stub.behaviour.tokenize_calls == 0


class FullAfter:
    """A file object that takes `room` writes, then fails as a full disk does."""

    def __init__(self, inner, room: int) -> None:
        self.inner, self.room = inner, room

    def write(self, data):
        self.room -= 1
        if self.room < 0:
            _enospc()
        return self.inner.write(data)

    def flush(self):
        if self.room < 0:
            _enospc()
        self.inner.flush()

    @property
    def closed(self):
        return self.inner.closed

    def close(self):
        self.inner.close()


def test_disk_filling_mid_run_prints_the_table_keeps_a_summary_and_exits_5(stub_server, tmp_path, monkeypatch,
                                                                          capsys):
    import servesweep.loadtest as loadtest
    import servesweep.results.summary as results

    class FillingWriter(RecordWriter):
        def _open(self, path):
            return FullAfter(super()._open(path), room=4)

    out, fallback = tmp_path / "out", tmp_path / "fallback"
    fallback.mkdir()
    real_replace = os.replace

    def replace(src, dst):  # the results directory's disk is full; the fallback's is not
        if str(dst).startswith(str(out)):
            _enospc()
        real_replace(src, dst)

    monkeypatch.setattr(loadtest, "RecordWriter", FillingWriter)
    monkeypatch.setattr(results.os, "replace", replace)
    monkeypatch.setattr(results.tempfile, "gettempdir", lambda: str(fallback))
    stub = stub_server(itl_s=0.002)
    code = main(["run", "--url", stub.url, "--concurrency", "2", "--num-requests", "60", "--out", str(out),
                 "--no-progress", "--no-telemetry"])
    captured = capsys.readouterr()
    assert code == errors.EXIT_OUTPUT
    assert "level" in captured.out and "c2" in captured.out  # the table
    (kept,) = list(fallback.glob("servesweep-summary-*.json"))
    summary = json.loads(kept.read_text())
    assert summary["abort_kind"] == "output" and "No space left on device" in summary["output_error"]
    assert f"the summary is in {kept}" in " ".join(captured.err.split())
    assert "Traceback" not in captured.err


def test_telemetry_on_a_full_disk_keeps_sampling_without_a_traceback(tmp_path, monkeypatch):
    from servesweep.backends.telemetry import TelemetrySampler

    class Reader:
        source = "test"

        def read(self):
            return [{"running": 1.0}]

    sampler = TelemetrySampler(Reader(), tmp_path / "telemetry.jsonl", interval_s=0.01)
    monkeypatch.setattr(sampler, "_open", lambda: FullAfter(open(tmp_path / "telemetry.jsonl", "ab"), room=2))
    crashed = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args))
    sampler.start(0.0)
    for _ in range(5):
        sampler.sample_now()
    sampler.stop()
    assert not crashed and len(sampler.samples) >= 5
    assert sampler.write_error.endswith("telemetry.jsonl: No space left on device")


# --- 6. text from servers and files is printed as itself ---------------------------------------------

def test_server_text_with_rich_markup_prints_verbatim(capsys, tmp_path):
    from servesweep.cli.common import finish_run

    nasty = "bad [/INST] token [bold]here[/bold] and [red]"
    summary = {
        "target": {"model": "m[/x]", "url": "http://127.0.0.1:1"}, "completed": 0, "failed": 2,
        "errors": {"stream_error": 2}, "error_examples": {"stream_error": nasty},
        "abort_reason": f"server stopped answering: {nasty}", "abort_kind": "server",
        "warnings": [nasty], "levels": [{
            "label": "c1[/y]", "completed": 0, "failed": 2, "request_throughput": 0.0, "output_token_throughput": 0.0,
            "ttft_ms": {}, "itl_ms": {}, "tpot_ms": {}, "e2e_ms": {},
            "timing_check": {"suspect": True, "reasons": [nasty]}}],
    }
    assert finish_run(summary, tmp_path) == errors.EXIT_SERVER
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert text.count("[/INST]") >= 4 and "[bold]here[/bold]" in text and "m[/x]" in text and "c1[/y]" in text


def test_no_console_reads_markup():
    import re

    import servesweep

    package = Path(servesweep.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        if path.name == "console.py" and path.parent.name == "servesweep":
            source = source.replace("return Console(markup=False, **kwargs)", "")
        assert not re.search(r"\bConsole\(", source), f"{path}: make consoles with servesweep.console.plain_console"
        assert not re.search(r"\[/?(bold )?(red|yellow|green|dim|bold)\]", source), f"{path}: markup in a string"


# --- small things: the order of the refusals ---------------------------------------------------------

def test_remote_url_is_refused_before_the_out_dir_is_made(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--url", "http://10.1.2.3:8000", "--out", str(out)]) == 2
    assert "not a loopback address" in capsys.readouterr().err and not out.exists()


def test_gate_with_a_remote_url_is_refused_before_the_reference_is_measured(stub_server, tmp_path, capsys):
    from servesweep.testing.stub_server import StubBehaviour  # noqa: F401 - the stub records what reaches it

    stub = stub_server()
    spec = Path(__file__).resolve().parents[2] / "scenarios" / "gate-perplexity.yaml"
    out = tmp_path / "gate"
    code = main(["gate", "--spec", str(spec), "--url", "http://10.1.2.3:8000", "--reference-url", stub.url,
                 "--out", str(out)])
    assert code == 2 and "not a loopback address" in capsys.readouterr().err
    assert stub.behaviour.completion_calls == 0 and not out.exists()


def test_gate_refuses_credentials_in_the_reference_url_and_prints_none_of_them(stub_server, tmp_path, capsys):
    stub = stub_server()
    spec = Path(__file__).resolve().parents[2] / "scenarios" / "gate-perplexity.yaml"
    out = tmp_path / "gate"
    reference = stub.url.replace("http://", "http://ref-user:s3cret-pass@")
    code = main(["gate", "--spec", str(spec), "--url", stub.url, "--reference-url", reference, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "--reference-url has credentials in it" in captured.err
    assert "s3cret-pass" not in captured.out + captured.err
    assert stub.behaviour.completion_calls == 0 and not out.exists()


def test_report_says_when_it_leaves_out_a_torn_last_point(tmp_path, capsys):
    import shutil

    example = Path(__file__).resolve().parents[2] / "examples" / "h100-llama3-8b"
    sweep = tmp_path / "sweep"
    shutil.copytree(example, sweep)
    lines = (sweep / "points.jsonl").read_bytes().splitlines()
    (sweep / "points.jsonl").write_bytes(b"\n".join(lines) + b"\n" + b'{"config": "fp8", "lev')
    main(["report", str(sweep)])
    err = " ".join(capsys.readouterr().err.split())
    assert f"points.jsonl:{len(lines) + 1}: the last point is torn" in err and "left out of the report" in err
