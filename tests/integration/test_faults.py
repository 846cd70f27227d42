"""Fault handling in the load generator: each test reproduces a failure a real server (or disk)
produces, against the in-process stand-in server, and checks the run records it honestly and
ends cleanly."""

import asyncio
import errno
import json
import logging
import os
import signal
import time

import pytest

from servesweep import errors
from servesweep.loadgen import tokenizer as tokenizer_module
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import RecordWriter, RequestRecord, read_records
from servesweep.loadgen.sse import SSEParser
from servesweep.loadgen.target import TargetError
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test


def config(url, tmp_path, levels, **workload):
    return LoadTestConfig(base_url=url, out_dir=tmp_path, levels=levels, show_progress=False,
                          workload=Workload(**({"input_len": 16, "output_len": 8} | workload)))


def records(tmp_path):
    return list(read_records(tmp_path / "records.jsonl"))


# --- stream events the protocol does not allow -------------------------------------------------

@pytest.mark.parametrize("event", [
    "null", "[]", "5", '"text"', '{"choices":[null]}', '{"choices":{"text":"x"}}', '{"usage":"n/a"}',
    '{"choices":[],"usage":{"completion_tokens":"8"}}', '{"choices":[{"text":5}]}',
    '{"choices":[{"delta":"x"}]}', '{"choices":[{"delta":{"content":["x"]}}]}',
])
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_event_that_is_json_but_not_a_valid_chunk_fails_the_request_and_the_user_goes_on(
        stub_server, tmp_path, event, endpoint):
    stub = stub_server(mode="inject", inject=event, fail_after_chunks=2)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=8)],
                                         endpoint=endpoint))
    assert len(records(tmp_path)) == 8  # both closed-loop users sent all their requests
    assert summary["errors"] == {"stream_error": 8} and summary["completed"] == 0
    assert "malformed stream event" in summary["error_examples"]["stream_error"]
    assert event[:20] in summary["error_examples"]["stream_error"]


async def test_error_event_without_the_error_wrapper_is_a_stream_error(stub_server, tmp_path):
    event = '{"object":"error","message":"engine overloaded","type":"InternalServerError","param":null,"code":500}'
    stub = stub_server(mode="inject", inject=event)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)]))
    assert summary["errors"] == {"stream_error": 4}
    assert summary["error_examples"]["stream_error"] == "engine overloaded"


# --- which chunks are tokens -------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_chunks_without_a_token_are_not_arrivals(stub_server, tmp_path, endpoint):
    # Empty chunks at once, the first token after 150 ms, an empty-text token mid-stream, a last
    # chunk with only the finish_reason.
    stub = stub_server(mode="empty_deltas", ttft_s=0.15, itl_s=0.005, fail_after_chunks=3)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)],
                                         endpoint=endpoint, output_len=6))
    assert summary["completed"] == 4
    for r in records(tmp_path):
        assert 145 <= r.ttft_ms < 400  # was 0.1 ms: the first empty chunk counted as the first token
        # One arrival per generated token, the empty-text one included: the count matches usage.
        assert len(r.chunk_arrivals_s) == r.completion_tokens == 6
    assert summary["itl_ms"]["count"] == 4 * 5


def _exchange_arrivals(*events: str) -> list[float]:
    from servesweep.loadgen.exchange import Exchange

    record = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0)
    exchange = Exchange(record, 0.0, stream=True, keep_text=False)
    exchange.on_status(200, "OK")
    for i, event in enumerate((*events, "[DONE]")):
        exchange.on_body(f"data: {event}\n\n".encode(), float(i))
    exchange.on_complete(float(len(events) + 1))
    assert record.ok, record.error_message
    return record.chunk_arrivals_s


@pytest.mark.usefixtures("event_decoder")
def test_reasoning_and_tool_call_deltas_are_tokens_role_headers_are_not():
    role = '{"choices":[{"delta":{"role":"assistant","content":""}}]}'
    reasoning = '{"choices":[{"delta":{"reasoning_content":"hm"}}]}'
    tool = '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}'
    content = '{"choices":[{"delta":{"content":"x"}}]}'
    finish = '{"choices":[{"delta":{},"finish_reason":"stop"}]}'
    assert _exchange_arrivals(role, reasoning, tool, content, finish) == [1.0, 2.0, 3.0]
    # A completions chunk with an empty text is a token (vLLM: one chunk per token, some without
    # text) unless the stream's usage counts fewer: then the empty finish-only last chunk and the
    # empty chunks before the first text are the surplus. Without usage, they are never counted.
    empty, text, finish = ('{"choices":[{"text":""}]}', '{"choices":[{"text":"a"}]}',
                           '{"choices":[{"text":"","finish_reason":"length"}]}')
    usage = '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d}}'
    assert _exchange_arrivals(empty, text, empty, finish, usage % 4) == [0.0, 1.0, 2.0, 3.0]
    assert _exchange_arrivals(empty, text, empty, finish, usage % 2) == [1.0, 2.0]
    assert _exchange_arrivals(empty, text, empty, finish) == [1.0, 2.0]


# --- streams without usage ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["ok", "empty_deltas"])
async def test_stream_without_usage_counts_tokens_from_chunks_and_says_so(stub_server, tmp_path, mode):
    stub = stub_server(usage=False, itl_s=0.005, mode=mode)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)]))
    assert summary["completed"] == 4
    assert summary["total_output_tokens"] == 4 * 8 and summary["output_token_throughput"] > 0
    assert summary["tpot_ms"]["p50"] is not None
    assert all(r.completion_tokens == 8 and r.completion_tokens_source == "chunks" for r in records(tmp_path))
    assert summary["token_count_source"] == {"chunks": 4}
    assert any("counted as content chunks" in w for w in summary["warnings"])
    assert summary["levels"][0]["token_count_source"] == {"chunks": 4}


async def test_token_count_source_is_usage_when_the_server_reports_it(stub_server, tmp_path):
    stub = stub_server()
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)]))
    assert summary["token_count_source"] == {"usage": 4} and summary["warnings"] == []
    assert all(r.completion_tokens_source == "usage" for r in records(tmp_path))


async def test_non_streamed_answer_without_usage_is_flagged_as_missing(stub_server, tmp_path):
    stub = stub_server(usage=False)
    summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=4)],
                                         stream=False))
    assert summary["completed"] == 4 and summary["token_count_source"] == {"missing": 4}
    assert any("reported no token counts" in w for w in summary["warnings"])


# --- the server goes away or stops answering ---------------------------------------------------

async def _wait_for_records(path, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_bytes().splitlines()) >= n):
        assert time.monotonic() < deadline, "no records appeared"
        await asyncio.sleep(0.01)


async def test_server_dying_during_a_level_ends_the_run_with_a_summary(stub_server, tmp_path):
    stub = stub_server(itl_s=0.01)
    levels = [LoadLevel(concurrency=2, num_requests=12), LoadLevel(concurrency=4, num_requests=8)]
    run = asyncio.create_task(run_load_test(config(stub.url, tmp_path, levels)))
    await _wait_for_records(tmp_path / "records.jsonl", 2)
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stub.runner.cleanup(), stub.loop))
    summary = await asyncio.wait_for(run, 20)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["abort_reason"] == summary["abort_reason"] and summary["abort_kind"] == "server"
    # The level's failed requests made the watchdog ask the server, which did not answer; or, when
    # the level's last requests still completed, the next level's prompts could not be built
    # through the dead server's /tokenize.
    reason = summary["abort_reason"]
    assert (reason.startswith(f"server stopped answering: {stub.url}/v1/models cannot be reached")
            or ("cannot build the prompts of level c4" in reason and f"{stub.url}/tokenize" in reason)), reason
    assert [lv["label"] for lv in summary["levels"]] == ["c2"]
    assert summary["completed"] >= 2 and summary["failed"] >= 1


async def test_frozen_server_stops_the_run_after_a_few_timeouts(stub_server, tmp_path):
    stub = stub_server(mode="hang")
    cfg = config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=40)], request_timeout_s=0.2)
    start = time.monotonic()
    summary = await run_load_test(cfg)
    assert time.monotonic() - start < 3  # not 40 / 2 x 0.2 s
    assert summary["abort_reason"].startswith("server stopped answering: 3 requests in a row timed out")
    assert summary["errors"]["timeout"] >= 3
    assert len(records(tmp_path)) < 10


async def test_models_answer_that_is_not_a_model_list_is_named(stub_server, tmp_path):
    for body in ("[]", "null", '"ok"', '{"object":"list"}', '{"data":{"id":"m"}}'):
        stub = stub_server(models_body=body)
        with pytest.raises(TargetError, match="is not an OpenAI-compatible server"):
            await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=1)]))


def test_target_error_is_the_one_of_the_error_hierarchy():
    assert TargetError is errors.TargetError
    assert issubclass(TargetError, errors.UserError)


# --- /tokenize that never answers --------------------------------------------------------------

async def test_tokenize_that_never_answers_times_out_naming_it(stub_server, tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "CONTROL_TIMEOUT_S", 0.3)
    stub = stub_server(tokenize_answers=0)
    start = time.monotonic()
    with pytest.raises(TargetError, match=r"/tokenize did not answer within 0\.3 s"):
        await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=1)]))
    assert time.monotonic() - start < 3


async def test_sigint_while_prompts_are_built_stops_the_run_with_a_summary(stub_server, tmp_path):
    # The probe gets its answer; the level's prompt building then hangs on /tokenize.
    stub = stub_server(tokenize_answers=1)
    heard = []
    previous = signal.signal(signal.SIGINT, lambda *_: heard.append("test handler"))  # never KeyboardInterrupt
    try:
        run = asyncio.create_task(run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=1, num_requests=4)])))
        deadline = time.monotonic() + 10
        while stub.behaviour.tokenize_calls < 2:  # the probe got its answer; the build now waits
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        start = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
        summary = await asyncio.wait_for(run, 5)
        assert time.monotonic() - start < 2
    finally:
        signal.signal(signal.SIGINT, previous)
    assert heard == []  # the runner's handler took the signal
    assert summary["interrupted"] is True and summary["abort_reason"] == "interrupted by signal"
    assert summary["levels"] == []
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True


# --- a disk that fills up ----------------------------------------------------------------------

class FullDisk:
    """A file that takes `room` writes (or flushes), then fails as a full disk does."""

    def __init__(self, inner, room: int, fail_on: str) -> None:
        self.inner, self.room, self.fail_on = inner, room, fail_on
        self.calls = 0

    def _use(self, op: str) -> None:
        if op == self.fail_on:
            self.calls += 1
            if self.calls > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, data: bytes) -> int:
        self._use("write")
        return self.inner.write(data)

    def flush(self) -> None:
        self._use("flush")
        self.inner.flush()

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("fail_on", ["write", "flush"])
async def test_disk_full_mid_run_stops_sending_and_says_why(stub_server, tmp_path, monkeypatch, caplog, fail_on):
    import servesweep.loadtest as loadtest

    class FillingWriter(RecordWriter):
        def _open(self, path):
            return FullDisk(super()._open(path), room=5, fail_on=fail_on)

    monkeypatch.setattr(loadtest, "RecordWriter", FillingWriter)
    stub = stub_server(itl_s=0.002)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        summary = await run_load_test(config(stub.url, tmp_path, [LoadLevel(concurrency=2, num_requests=60)]))
    assert summary["abort_reason"].startswith("cannot write records to ")
    assert "No space left on device" in summary["abort_reason"]
    sent = summary["completed"] + summary["failed"] + summary["cancelled"]
    assert sent < 15  # it stopped sending, not after all 60
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]


def test_record_writer_used_as_a_context_manager_raises_output_error(tmp_path):
    class FillingWriter(RecordWriter):
        def _open(self, path):
            return FullDisk(super()._open(path), room=1, fail_on="write")

    record = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0)
    with pytest.raises(errors.OutputError, match="No space left on device"):
        with FillingWriter(tmp_path / "records.jsonl") as writer:
            writer.write(record)
            writer.write(record)  # fails: kept, not raised into the request
            writer.write(record)  # dropped
    assert writer.error is not None and writer.error.errno == errno.ENOSPC


async def test_summary_the_disk_refuses_goes_to_a_fallback_place_and_says_why(stub_server, tmp_path, monkeypatch):
    import servesweep.results.summary as results

    real_replace = os.replace
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    out = tmp_path / "out"

    def full(src, dst):  # the results directory's disk fills as the summary is written
        if str(dst).startswith(str(out)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", full)
    monkeypatch.setattr(results.tempfile, "gettempdir", lambda: str(fallback))
    stub = stub_server()
    summary = await run_load_test(config(stub.url, out, [LoadLevel(concurrency=1, num_requests=2)]))
    message = summary["output_error"]
    assert "\n" not in message and "summary.json" in message and "No space left on device" in message
    assert not (out / "summary.json").exists() and summary["completed"] == 2
    kept = json.loads(open(summary["summary_path"]).read())
    assert summary["summary_path"].startswith(str(fallback)) and kept["completed"] == 2
    assert kept["output_error"] == message


# --- parsing cost ------------------------------------------------------------------------------

def test_a_large_event_parses_in_linear_time():
    payload = b'{"choices":[{"text":"' + b"x" * (8 << 20) + b'"}]}'
    stream = b"data: " + payload + b"\n\ndata: [DONE]\n\n"
    parser = SSEParser()
    events = []
    start = time.perf_counter()
    for i in range(0, len(stream), 4096):  # 4 KB reads: 2,000 of them
        events += parser.feed(stream[i:i + 4096])
    elapsed = time.perf_counter() - start
    assert events == [payload, b"[DONE]"]
    assert elapsed < 1.0  # was ~3 s: every read copied and rescanned what was buffered
