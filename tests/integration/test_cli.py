"""The command line as a user meets it: exit codes, one-line errors, interruption, a dying server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servesweep.backends.process import free_port
from servesweep.cli import main
from servesweep.loadgen.records import read_records


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servesweep", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_against_a_url_writes_results(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.01, itl_s=0.001)
    out = tmp_path / "res"
    code = main(["run", "--url", stub.url, "--concurrency", "1,4", "--num-requests", "8", "--input-len",
                 "uniform:8:32", "--output-len", "normal:8:2", "--out", str(out), "--no-progress",
                 "--slo-ttft-ms", "1000"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 16 and [lv["label"] for lv in summary["levels"]] == ["c1", "c4"]
    assert summary["goodput"]["good_requests"] == 16
    assert summary["workload"]["input_len"] == "uniform:8:32"


@pytest.mark.parametrize("args,message", [
    (["--input-len", "gauss:1:2"], "bad length spec 'gauss:1:2'"),
    (["--concurrency", "0"], "concurrency must be >= 1"),
])
def test_bad_options_exit_2_with_one_line(args, message, tmp_path):
    result = run_cli("run", "--url", "http://127.0.0.1:9", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_url_fails_within_seconds(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_cli("run", "--url", url, "--concurrency", "8", "--num-requests", "1000", "--out", str(tmp_path))
    assert result.returncode == 2
    assert f"cannot reach {url}" in result.stderr
    assert time.monotonic() - start < 15


def test_missing_dataset_is_named(stub_server, tmp_path):
    stub = stub_server()
    result = run_cli("run", "--url", stub.url, "--dataset", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path))
    assert result.returncode == 2 and "nope.jsonl does not exist" in result.stderr


def _start_cli(url: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "servesweep", "run", "--url", url, "--concurrency", "4", "--num-requests", "5000",
         "--output-len", "50", "--input-len", "16", "--out", str(out), "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_records(path: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} records in {path} after {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_records_and_writes_summary(stub_server, tmp_path, sig):
    stub = stub_server(ttft_s=0.01, itl_s=0.002)
    proc = _start_cli(stub.url, tmp_path)
    _wait_for_records(tmp_path / "records.jsonl", 8)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # interrupted: what completed is on disk, but the run is not whole
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    records = list(read_records(tmp_path / "records.jsonl"))
    completed = [r for r in records if r.ok]
    assert summary["completed"] == len(completed) >= 8
    # In-flight requests were cancelled, not left hanging or counted as failures.
    assert summary["failed"] == 0
    assert summary["cancelled"] == sum(r.error_kind == "cancelled" for r in records)


def test_server_dying_mid_run_ends_the_run_with_the_error_recorded(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "servesweep.testing.stub_server", "--port", str(port),
                               "--itl", "0.002"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while run_cli("run", "--url", url, "--num-requests", "1", "--out", str(tmp_path / "probe")).returncode:
            assert time.monotonic() < deadline, "stub server did not start"
            time.sleep(0.2)
        proc = _start_cli(url, tmp_path / "run")
        _wait_for_records(tmp_path / "run" / "records.jsonl", 8)
        server.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 3, err  # the server failed mid-run
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "server stopped answering" in summary["abort_reason"]
    assert summary["completed"] >= 8
    assert summary["errors"].get("connection_error", 0) + summary["errors"].get("stream_error", 0) >= 1
    assert "run stopped early" in err


@pytest.mark.parametrize("make", ["file", "under_file", "read_only"])
def test_unusable_out_is_one_line_exit_2_before_anything_is_sent(tmp_path, make):
    # A dead URL: were --out not checked first, the error would be about the URL instead.
    if make == "file":
        out = tmp_path / "results"
        out.write_text("")
    elif make == "under_file":
        (tmp_path / "f").write_text("")
        out = tmp_path / "f" / "results"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "results"
    result = run_cli("run", "--url", f"http://127.0.0.1:{free_port()}", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "output directory" in result.stderr and "cannot reach" not in result.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", None])
def test_scenario_that_is_not_text_or_is_a_directory_is_one_line(tmp_path, content):
    path = tmp_path / "scenario.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = run_cli("sweep", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr
    assert ("not UTF-8" if content else "is a directory") in result.stderr
