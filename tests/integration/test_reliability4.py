"""Reliability, round 4 (issue 37): credentials, bounded memory on hostile input, no lost or hidden
data. Each case against a stand-in server over real sockets (real signals where a signal is the
case), with the outcome servesweep promises. No timed assertions and no sleeps as synchronisation:
waits are on events (a request the stand-in saw, a line a process printed), each bounded by a
deadline that fails the test instead of hanging it; memory cases run in a child process under
RLIMIT_AS, so a regression fails the test instead of taking the machine down."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from servesweep import auth
from servesweep.cli import main
from servesweep.errors import EXIT_ALL_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVER, EXIT_USAGE
from servesweep.loadgen import intervals as soak
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import read_records
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test
from servesweep.loadgen.load_runner import run_async

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-Zq8vN3kP0wX5rT7y"  # what no output may hold
SMALL = ["--input-len", "16", "--output-len", "8", "--no-progress"]
# Scenarios in tests that must be refused name a model that does not exist: a regression that let
# one through then fails at the server's start, rather than launching the built-in vLLM.
NO_MODEL = "model: /nonexistent/servesweep-test-model\n"


def wait_for(condition, what: str, limit_s: float = 60.0) -> None:
    """Poll a condition another thread or process makes true; fail (not hang) past the deadline."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {limit_s:g} s")
        time.sleep(0.02)


def cli(*args: str, env: dict[str, str] | None = None, limit_s: float = 120.0,
        memory_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`python -m servesweep ARGS` in a child process (this tree first on the path), bounded in time
    and, with `memory_bytes`, in address space."""
    def limit() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "servesweep", *args], capture_output=True, text=True,
                          timeout=limit_s, env=environ, preexec_fn=limit)


def every_output(out: Path, *texts: str) -> str:
    """Everything a run left: its console output and every file under its results directory."""
    files = [p.read_bytes().decode(errors="replace") for p in sorted(out.rglob("*")) if p.is_file()]
    return "\n".join([*texts, *files])


def secrets_of(key: str) -> list[str]:
    return [key, *auth.ServerAuth((("Authorization", f"Bearer {key}"),)).secrets]


# --- 11. API keys: every request carries them, no output holds them, 401 is exit 2 ---------------

@pytest.mark.parametrize("how", ["--api-key", "OPENAI_API_KEY", "--header", "url", "--workers 2"])
def test_the_key_goes_with_every_request_and_into_no_output(stub_server, tmp_path, how):
    stub = stub_server(api_key=KEY, metrics=True)
    url, args, env = stub.url, [], {"OPENAI_API_KEY": ""}
    if how == "--api-key":
        args = ["--api-key", KEY]
    elif how == "OPENAI_API_KEY":
        env = {"OPENAI_API_KEY": KEY}
    elif how == "--header":
        args = ["--header", f"Authorization: Bearer {KEY}"]
    elif how == "url":
        url = stub.url.replace("http://", f"http://user:{KEY}@")
    else:
        args, env = ["--workers", "2"], {"OPENAI_API_KEY": KEY}
    out = tmp_path / "run"
    result = cli("run", "--url", url, "--concurrency", "2", "--num-requests", "6", "--out", str(out), *SMALL, *args,
                 env=env)
    assert result.returncode == EXIT_OK, result.stderr
    # Every request (model list, /tokenize, completions, /metrics) carried the key: none was refused.
    assert stub.behaviour.unauthorized == 0 and stub.behaviour.completion_calls >= 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 6 and summary["target"]["url"] == stub.url  # the URL without credentials
    assert summary["target"]["auth"]["headers"] == ["Authorization"]
    assert summary["telemetry"] is not None  # the metrics endpoint answered: the key went there too
    text = every_output(out, result.stdout, result.stderr)
    for secret in secrets_of(KEY):
        assert secret not in text


def test_no_key_or_a_wrong_one_is_an_authentication_failure(stub_server, tmp_path):
    stub = stub_server(api_key=KEY)
    none = cli("run", "--url", stub.url, "--num-requests", "2", "--out", str(tmp_path / "a"), *SMALL,
               env={"OPENAI_API_KEY": ""})
    assert none.returncode == EXIT_USAGE
    assert "authentication failure" in none.stderr and "--api-key" in none.stderr
    wrong = cli("run", "--url", stub.url, "--num-requests", "2", "--out", str(tmp_path / "b"), *SMALL,
                env={"OPENAI_API_KEY": "sk-wrong-key-0000"})
    assert wrong.returncode == EXIT_USAGE and "refused the credentials given (OPENAI_API_KEY)" in wrong.stderr
    assert "sk-wrong-key-0000" not in wrong.stderr + wrong.stdout
    assert stub.behaviour.completion_calls == 0  # refused before any load


def test_a_header_that_would_inject_lines_is_refused(stub_server, tmp_path, capsys):
    stub = stub_server()
    assert main(["run", "--url", stub.url, "--header", "X-Key: a\r\nX-Other: b", "--out", str(tmp_path / "o")]) == 2
    assert "line break" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and stub.behaviour.completion_calls == 0


def test_a_scenario_names_the_variable_never_the_key(tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: s\n{NO_MODEL}api_key: {KEY}\nload: {{concurrency: [1]}}\n")
    assert main(["sweep", str(scenario), "--out", str(tmp_path / "o")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "api_key_env" in err and KEY not in err and not (tmp_path / "o").exists()
    assert auth.with_scenario_key(auth.ServerAuth(), "MY_KEY", {"MY_KEY": KEY}).as_dict() == {
        "Authorization": f"Bearer {KEY}"}
    given = auth.ServerAuth((("Authorization", "Bearer other"),), "--api-key")
    assert auth.with_scenario_key(given, "MY_KEY", {"MY_KEY": KEY}) is given  # the command line wins


def test_a_launched_servers_key_is_not_recorded():
    with auth.using(auth.ServerAuth((("Authorization", f"Bearer {KEY}"),))):
        argv = auth.redact_argv(["vllm", "--api-key", KEY, f"--api-key={KEY}", "--port", "1", f"x{KEY}x"])
    assert KEY not in " ".join(argv) and argv[:3] == ["vllm", "--api-key", auth.REDACTED]


# --- 1. Locust: prompts that cannot be built end the run (exit 3), no process left behind ----------

def needs_locust() -> None:
    # Not importorskip: importing Locust would monkey-patch this pytest process for gevent.
    if importlib.util.find_spec("locust") is None:
        pytest.skip("Locust is not installed (pip install 'servesweep[locust]')")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("processes", [None, 2])
def test_locust_whose_tokenizer_hangs_exits_3_and_leaves_no_process(stub_server, tmp_path, processes):
    needs_locust()
    # /tokenize answers servesweep's own probe, then never again: every prompt build hangs.
    stub = stub_server(tokenize_answers=1)
    out, log = tmp_path / "run", tmp_path / "run.log"
    args = ["locust", "--url", stub.url, "--headless", "--users", "2", "--run-time", "120s", "--out", str(out),
            "--timeout", "3", *SMALL[:4], "--prompt-pool", "8"]
    if processes:
        args += ["--processes", str(processes)]
    proc = subprocess.Popen([sys.executable, "-m", "servesweep", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        code = proc.wait(90)  # well inside the 120 s run time: the build's 3 s timeout ends it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert code == EXIT_SERVER, text[-3000:]
    assert "did not answer within 3 s" in text
    assert not _group_alive(proc.pid), "a Locust process outlived servesweep"


# --- 2. a soak interval in which nothing finished is written, and the verdict sees it -------------

def test_a_server_that_freezes_shows_as_empty_intervals_and_a_drift(stub_server, tmp_path, monkeypatch):
    stub = stub_server(itl_s=0.002)
    release: list[threading.Event] = []
    rows: list[soak.IntervalRow] = []
    real_write = soak.write_row

    def write_row(out_dir, row):
        real_write(out_dir, row)
        rows.append(row)
        if not release and row.completed:
            release.append(stub.freeze())  # the server stops answering from here
        elif release and not release[0].is_set() and (row.completed == 0 or len(rows) > 40):
            release[0].set()  # an empty interval was written (or, without one, the test ends anyway)

    monkeypatch.setattr(soak, "write_row", write_row)
    config = LoadTestConfig(base_url=stub.url, out_dir=tmp_path / "soak", show_progress=False,
                            levels=[LoadLevel(concurrency=2, duration_s=30)], report_interval_s=0.25,
                            workload=Workload(input_len=16, output_len=8))
    config.levels[0] = LoadLevel(concurrency=2, num_requests=60)
    failsafe = threading.Timer(60, lambda: release and release[0].set())
    failsafe.start()
    try:
        summary = run_async(run_load_test(config))
    finally:
        failsafe.cancel()
        if release:
            release[0].set()
    stalled = [r for r in rows if r.completed == 0]
    assert stalled and all(r.in_flight for r in stalled), rows
    written = [json.loads(line) for line in (tmp_path / "soak" / soak.INTERVALS_FILE).read_text().splitlines()]
    assert any(w["completed"] == 0 and w["in_flight"] == 2 for w in written)
    assert summary["soak"]["verdict"] == "drifted"
    assert "the server stalled" in " ".join(summary["soak"]["levels"]["c2"]["why"])


# --- 3. a stream line that never ends: a stream error at the cap, memory bounded ------------------

def test_a_line_without_end_fails_the_request_in_bounded_memory(stub_server, tmp_path):
    stub = stub_server(mode="endless_line")
    out = tmp_path / "run"
    result = cli("run", "--url", stub.url, "--concurrency", "1", "--num-requests", "2", "--out", str(out), *SMALL,
                 "--no-telemetry", memory_bytes=1_500_000_000, limit_s=180)
    assert result.returncode == EXIT_ALL_FAILED, result.stderr[-2000:]
    records = list(read_records(out / "records.jsonl"))
    assert len(records) == 2 and all(r.error_kind == "stream_error" for r in records)
    assert all("longer than 32 MiB" in r.error_message for r in records)


# --- 4. absurd load values are refused; users never outnumber the requests ------------------------

@pytest.mark.parametrize("args", [["--concurrency", "100000000"], ["--request-rate", "nan"],
                                  ["--request-rate", "inf"], ["--request-rate", "2", "--burstiness", "nan"],
                                  ["--concurrency", "4", "--duration", "1e12"]])
def test_absurd_or_nan_load_values_exit_2_before_anything_starts(stub_server, tmp_path, args):
    stub = stub_server()
    # In a child under RLIMIT_AS: 10^8 users once took the whole 24 GB machine before the OOM killer.
    result = cli("run", "--url", stub.url, *args, "--out", str(tmp_path / "o"), memory_bytes=1_500_000_000,
                 limit_s=60)
    assert result.returncode == EXIT_USAGE, result.stderr[-2000:]
    assert result.stderr.startswith("servesweep: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and stub.behaviour.completion_calls == 0


def test_users_are_capped_at_the_request_count(stub_server, tmp_path, monkeypatch):
    from servesweep.loadgen.http import HttpPool

    stub = stub_server()
    connects: list[int] = []
    real_connect = HttpPool._connect

    async def counting_connect(self, loop):
        connects.append(1)
        return await real_connect(self, loop)

    monkeypatch.setattr(HttpPool, "_connect", counting_connect)
    config = LoadTestConfig(base_url=stub.url, out_dir=tmp_path / "o", show_progress=False,
                            levels=[LoadLevel(concurrency=5000, num_requests=4)],
                            workload=Workload(input_len=16, output_len=8))
    summary = run_async(run_load_test(config))
    assert summary["completed"] == 4
    assert len(connects) <= 4  # not a connection (nor a task) per idle user


# --- 5. two runs into one --out: the second is refused, the first keeps its files -----------------

def test_a_second_run_into_a_folder_in_use_is_refused(stub_server, tmp_path, capsys):
    stub = stub_server()
    out = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from servesweep.results import "
         "ensure_writable_dir; ensure_writable_dir(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()",
         str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / "records.jsonl").write_text('{"v": 2}\n')  # the first run's open records
        assert main(["run", "--url", stub.url, "--num-requests", "2", "--out", str(out), *SMALL]) == EXIT_USAGE
        assert "in use by another servesweep run" in capsys.readouterr().err
        assert (out / "records.jsonl").read_text() == '{"v": 2}\n' and not (out / "previous").exists()
        assert stub.behaviour.completion_calls == 0
    finally:
        holder.stdin.close()
        holder.wait(30)


# --- 6. SIGTERM / SIGINT before the load starts: 130, "interrupted", a summary --------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_tokenizer_hangs_ends_as_interrupted_with_a_summary(stub_server, tmp_path, sig):
    stub = stub_server(tokenize_answers=0)  # /tokenize never answers
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "servesweep", "run", "--url", stub.url, "--num-requests", "2",
                             "--out", str(out), *SMALL, "--no-telemetry"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for(lambda: stub.behaviour.tokenize_calls >= 1 or proc.poll() is not None, "the /tokenize call")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["levels"] == [] and summary["completed"] == 0


def test_a_tokenizer_that_hangs_past_the_timeout_is_the_servers_fault(stub_server, tmp_path):
    stub = stub_server(tokenize_answers=0)
    result = cli("run", "--url", stub.url, "--num-requests", "2", "--timeout", "2", "--out", str(tmp_path / "o"),
                 *SMALL, "--no-telemetry")
    assert result.returncode == EXIT_SERVER, result.stderr
    assert "/tokenize did not answer within 2 s" in result.stderr


# --- 12. truncated answers are counted apart ------------------------------------------------------

def test_truncated_answers_are_failures_of_their_own_kind(stub_server, tmp_path):
    # Every second request ends well-formed after 1 of the 8 tokens asked, finish_reason "stop".
    stub = stub_server(mode="truncate", fail_after_chunks=1, reset_every=2)
    out = tmp_path / "run"
    result = cli("run", "--url", stub.url, "--concurrency", "2", "--num-requests", "8", "--out", str(out), *SMALL,
                 "--slo-ttft-ms", "100000", "--no-telemetry")
    assert result.returncode == EXIT_OK, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 4 and summary["errors"] == {"truncated": 4}
    assert summary["goodput"]["good_requests"] == 4
    assert summary["total_output_tokens"] == 4 * 8  # throughput counts the whole answers only
    assert "TRUNCATED" in result.stderr and "4 x truncated" in result.stderr
    truncated = [r for r in read_records(out / "records.jsonl") if r.error_kind == "truncated"]
    assert len(truncated) == 4 and all(r.finish_reason == "stop" and r.completion_tokens == 1 for r in truncated)


# --- weak points: gzip, a stream that stalls, duplicate keys, a newer schema ------------------------

def test_a_compressed_stream_is_named_not_printed_as_bytes(stub_server, tmp_path):
    stub = stub_server(mode="gzip")
    result = cli("run", "--url", stub.url, "--num-requests", "2", "--out", str(tmp_path / "o"), *SMALL,
                 "--no-telemetry")
    assert result.returncode == EXIT_ALL_FAILED
    assert "gzip-encoded response" in result.stderr and "\\x1f\\x8b" not in result.stderr


def test_a_stream_that_stalls_fails_at_the_stall_timeout(stub_server, tmp_path):
    stub = stub_server(mode="stall", fail_after_chunks=2)
    out = tmp_path / "o"
    result = cli("run", "--url", stub.url, "--num-requests", "1", "--stall-timeout", "1", "--out", str(out), *SMALL,
                 "--no-telemetry")
    assert result.returncode == EXIT_ALL_FAILED, result.stderr
    (record,) = read_records(out / "records.jsonl")
    assert record.error_kind == "timeout" and "stalled: no bytes for 1 s" in record.error_message
    assert len(record.chunk_arrivals_s) == 2


def test_a_key_given_twice_in_a_scenario_is_refused(tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: s\n{NO_MODEL}load: {{concurrency: [1]}}\nload: {{concurrency: [64]}}\n")
    assert main(["sweep", str(scenario), "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert "line 4: key 'load' is given twice" in capsys.readouterr().err


@pytest.mark.parametrize("load, field", [("{concurrency: [0]}", "concurrency"),
                                         ("{concurrency: [2], num_requests: -5}", "num_requests"),
                                         ("{request_rate: [-3]}", "request_rate"),
                                         ("{request_rate: [2], burstiness: .nan}", "burstiness"),
                                         ("{concurrency: [1], duration_s: .inf}", "duration_s"),
                                         ("{concurrency: [100000000]}", "concurrency")])
def test_scenario_load_values_out_of_range_exit_2_and_create_nothing(tmp_path, capsys, load, field):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: s\n{NO_MODEL}load: {load}\n")
    assert main(["sweep", str(scenario), "--out", str(tmp_path / "o")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"load: {field} must be" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_locust_sends_the_key_from_every_process_and_writes_it_nowhere(stub_server, tmp_path):
    needs_locust()
    stub = stub_server(api_key=KEY, metrics=True)
    out = tmp_path / "run"
    result = cli("locust", "--url", stub.url, "--headless", "--users", "2", "--run-time", "3s", "--processes", "2",
                 "--out", str(out), *SMALL[:4], "--prompt-pool", "8", env={"OPENAI_API_KEY": KEY}, limit_s=180)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] > 0 and stub.behaviour.unauthorized == 0
    text = every_output(out, result.stdout, result.stderr)
    for secret in secrets_of(KEY):
        assert secret not in text
