"""Reliability, round 4 (issue 37): credentials, bounded memory on hostile input, no lost or hidden
data. Each case against a stand-in server over real sockets (real signals where a signal is the
case), with the outcome servesweep promises. No timed assertions and no sleeps as synchronisation:
waits are on events (a request the stand-in saw, a line a process printed), each bounded by a
deadline that fails the test instead of hanging it; memory cases run in a child process under
RLIMIT_AS, so a regression fails the test instead of taking the machine down."""

from __future__ import annotations

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
from servesweep.loadgen.runner import run_async

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-Zq8vN3kP0wX5rT7y"  # what no output may hold
SMALL = ["--input-len", "16", "--output-len", "8", "--no-progress"]


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
    scenario.write_text(f"name: s\napi_key: {KEY}\nload: {{concurrency: [1]}}\n")
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
