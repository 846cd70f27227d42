"""`servesweep locust` against the stand-in server: headless, a master with two workers, a worker
that dies mid-run, and the web UI in headless Chromium.

Each test runs real Locust processes (a few seconds each: Locust's start-up and a short test)."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from servesweep.backends.process import free_port
from servesweep.cli import main
from servesweep.loadgen.records import read_records
from servesweep.loadgen.workers import worker_records_path
from servesweep.testing.cdp import Browser, find_chromium

# Not importorskip: importing Locust here would monkey-patch this pytest process for gevent.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="Locust is not installed (pip install 'servesweep[locust]')")

WORKLOAD = ["--input-len", "12", "--output-len", "6", "--prompt-pool", "16"]


def _summary(out: Path) -> dict:
    return orjson.loads((out / "summary.json").read_bytes())


def _locust_csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "locust_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def _spawn(*args: str, log: Path) -> subprocess.Popen:
    """`servesweep locust ...` in its own process group (it runs Locust as a child)."""
    return subprocess.Popen([sys.executable, "-m", "servesweep", "locust", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL servesweep and the Locust it runs (in a process group of its own: servesweep.cli.locust)."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
    except OSError:
        children = []
    for pid in children + [proc.pid]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(10)


def _assert_counts_agree(summary: dict, out: Path) -> None:
    """servesweep's count of requests is Locust's, and the TTFT/TPOT/ITL entries match the records."""
    locust = summary["locust"]["entries"]
    request = locust.get("POST /v1/completions") or locust["POST /v1/chat/completions"]
    assert summary["completed"] > 0
    assert request["requests"] == summary["completed"] + summary["failed"]
    assert request["failures"] == summary["failed"]
    assert locust["LLM TTFT"]["requests"] == summary["ttft_ms"]["count"] == summary["completed"]
    assert locust["LLM TPOT"]["requests"] == summary["tpot_ms"]["count"]
    assert locust["LLM ITL"]["requests"] == summary["itl_ms"]["count"]
    records = list(read_records(out / "records.jsonl"))
    excluded = summary.get("excluded_before_reset", 0)  # Locust's statistics were reset after those
    assert len(records) == excluded + summary["completed"] + summary["failed"] + summary["cancelled"]


def test_headless_run_reports_ttft_tpot_and_the_same_count_as_locust(stub_server, tmp_path):
    # TTFT ~123 ms: Locust's own buckets would report it as 120 or 130 ms.
    stub = stub_server(ttft_s=0.123, itl_s=0.004)
    out = tmp_path / "run"
    # --reset-stats: Locust restarts its statistics once the users are spawned (after ~1 s here)
    code = main(["locust", "--url", stub.url, "--headless", "--users", "3", "--spawn-rate", "2",
                 "--run-time", "3s", "--out", str(out), "--locust-arg=--reset-stats", *WORKLOAD])
    assert code == 0
    summary = _summary(out)
    assert summary["excluded_before_reset"] > 0
    _assert_counts_agree(summary, out)
    assert summary["load"]["role"] == "local" and summary["levels"][0]["label"] == "c3"
    stats = _locust_csv(out)
    assert {"TTFT", "TPOT", "ITL", "/v1/completions", "Aggregated"} <= set(stats)
    assert "50%" in stats["TTFT"] and "99%" in stats["TTFT"] and "95%" not in stats["TTFT"]
    # Locust's TTFT median, read from its histogram, is the records' median to the millisecond.
    assert abs(float(stats["TTFT"]["50%"]) - summary["ttft_ms"]["p50"]) <= 1.5
    assert summary["ttft_ms"]["p50"] >= 123
    # the Aggregated row counts requests only, not TTFT/TPOT/ITL samples
    assert int(stats["Aggregated"]["Request Count"]) == int(stats["/v1/completions"]["Request Count"])


def test_failures_carry_the_servers_message(stub_server, tmp_path):
    stub = stub_server(mode="http_error")
    out = tmp_path / "run"
    code = main(["locust", "--url", stub.url, "--headless", "--users", "2", "--spawn-rate", "100",
                 "--run-time", "1s", "--out", str(out), *WORKLOAD])
    assert code == 4  # every request failed: servesweep run's exit code
    summary = _summary(out)
    assert summary["completed"] == 0 and summary["failed"] > 0
    _assert_counts_agree_failures(summary)
    with open(out / "locust_failures.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["Error"] == "LLMRequestError('http_error (HTTP 400): stub refuses this request')"
    # Locust rewrites its CSV files once a second, so they may miss the last second's failures
    assert 0 < int(row["Occurrences"]) <= summary["failed"]


def _assert_counts_agree_failures(summary: dict) -> None:
    entry = summary["locust"]["entries"]["POST /v1/completions"]
    assert entry["requests"] == entry["failures"] == summary["failed"]
    assert "LLM TTFT" not in summary["locust"]["entries"]


def _master_and_workers(stub_url: str, out: Path, run_time: str, port: int, logs: Path, *extra: str):
    master = _spawn("--url", stub_url, "--headless", "--master", "--expect-workers", "2", "--users", "4",
                    "--spawn-rate", "100", "--run-time", run_time, "--master-port", str(port),
                    "--out", str(out), *WORKLOAD, *extra, log=logs / "master.log")
    workers = [_spawn("--worker", "--master-port", str(port), log=logs / f"worker-{i}.log") for i in range(2)]
    return master, workers


def test_master_with_two_workers_merges_their_records(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.02, itl_s=0.004)
    out = tmp_path / "run"
    master, workers = _master_and_workers(stub.url, out, "3s", free_port(), tmp_path, "--endpoint", "chat")
    try:
        assert master.wait(90) == 0, (tmp_path / "master.log").read_text()[-3000:]
        for w in workers:
            w.wait(30)
    finally:
        for p in (master, *workers):
            _kill_group(p)
    summary = _summary(out)
    _assert_counts_agree(summary, out)
    workers_check = summary["workers"]
    assert workers_check["count"] == 2 and workers_check["lost"] == []
    assert workers_check["merged_equals_union"] is True
    per_worker = workers_check["per_worker"]
    assert all(w["received"] == w["in_file"] > 0 for w in per_worker.values())
    assert sum(w["received"] for w in per_worker.values()) == workers_check["merged_records"]
    assert workers_check["merged_records"] == sum(1 for _ in read_records(out / "records.jsonl"))
    assert "POST /v1/chat/completions" in summary["locust"]["entries"]
    assert summary["output_len_mismatch"] == 0  # the chat role header is not counted as a token


def _workers_reported(merged: Path) -> set[int]:
    """The worker indices whose records the master has written to the merged file so far."""
    if not merged.exists():
        return set()
    return {r.request_id % 4096 for r in read_records(merged)}


def test_a_worker_dying_mid_run_leaves_the_others_records_intact(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.02, itl_s=0.004)
    out = tmp_path / "run"
    master, workers = _master_and_workers(stub.url, out, "7s", free_port(), tmp_path)
    try:
        # wait until records of both workers have reached the master (a report from each: an event,
        # not a guess at the 3-second report period, which a loaded machine stretches), then kill one
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _workers_reported(out / "records.jsonl") == {0, 1}:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the master got no records from both workers: "
                        + (tmp_path / "master.log").read_text()[-2000:])
        _kill_group(workers[1])
        assert master.wait(90) == 0, (tmp_path / "master.log").read_text()[-3000:]
        workers[0].wait(30)
    finally:
        for p in (master, *workers):
            _kill_group(p)
    summary = _summary(out)
    _assert_counts_agree(summary, out)
    per_worker = summary["workers"]["per_worker"]
    merged = {r.request_id: r for r in read_records(out / "records.jsonl")}
    # which index the killed worker got depends on connection order: find it by who stopped reporting
    (lost,) = summary["workers"]["lost"]
    (kept,) = [int(i) for i in per_worker if int(i) != lost]
    kept_records = list(read_records(worker_records_path(out, kept)))
    assert per_worker[str(kept)]["final_report"] and per_worker[str(kept)]["received"] == len(kept_records)
    assert all(merged[r.request_id].to_dict() == r.to_dict() for r in kept_records)
    # the dead worker: what reached the master is in its own file too; its tail may not have
    dead_ids = {r.request_id for r in read_records(worker_records_path(out, lost))}
    dead_merged = [rid for rid in merged if rid % 4096 == lost]
    assert 0 < len(dead_merged) <= len(dead_ids) and set(dead_merged) <= dead_ids


def test_pure_modules_do_not_import_locust():
    # Importing Locust monkey-patches the standard library for gevent: the CLI and the modules the
    # unit tests use must not do it.
    code = ("import sys; import servesweep.cli, servesweep.locust.config, servesweep.locust.locust_summary, "
            "servesweep.locust.webtab, servesweep.locust.reporting, servesweep.locust.prompts; "
            "print('locust' in sys.modules, 'gevent' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.parametrize("args,message", [
    (["--url", "http://127.0.0.1:9", "--master", "--processes", "2"], "--processes already starts a master"),
    (["--worker", "--url", "http://127.0.0.1:9"], "--worker takes its workload from the master"),
    (["--url", "http://127.0.0.1:9", "--run-time", "5x"], "--run-time: run time '5x'"),
    ([], "--url is required"),
])
def test_bad_options_exit_2_with_one_line(args, message, capsys):
    assert main(["locust", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_an_open_loop_scenario_needs_users(tmp_path, capsys):
    scenario = tmp_path / "open.yaml"
    scenario.write_text("name: open\nload:\n  request_rate: [2]\n")
    assert main(["locust", "--url", "http://127.0.0.1:9", "--scenario", str(scenario)]) == 2
    assert "Locust runs closed loop only" in capsys.readouterr().err
    assert main(["locust", "--url", "http://127.0.0.1:9", "--scenario", str(scenario), "--input-len", "8"]) == 2
    assert "drop --input-len or the scenario" in capsys.readouterr().err


CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
async def test_web_ui_starts_a_swarm_and_shows_the_llm_tab(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.05, itl_s=0.02, metrics=True)
    out, port = tmp_path / "run", free_port()
    ui = _spawn("--url", stub.url, "--web-port", str(port), "--out", str(out), *WORKLOAD, log=tmp_path / "ui.log")
    screenshot = Path(os.environ.get("SERVESWEEP_UI_SCREENSHOT", tmp_path / "locust-ui.png"))
    try:
        async with Browser(CHROMIUM, free_port()) as page:
            deadline = time.monotonic() + 60
            while True:  # Locust's start-up
                await page.goto(f"http://127.0.0.1:{port}/")
                try:
                    await page.wait_for("document.querySelector('input[name=userCount]') !== null", 5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline or ui.poll() is not None:
                        raise AssertionError((tmp_path / "ui.log").read_text()[-3000:]) from None
            await page.evaluate(START_FROM_FORM)
            await page.wait_for(STATS_ROW % "TTFT" + " && " + STATS_ROW % "TPOT")
            await page.evaluate("Array.from(document.querySelectorAll('[role=tab]'))"
                                ".find(t => t.textContent.trim() === 'LLM').click()")
            text = await page.wait_for("document.body.innerText.includes('Latency: TTFT (ms)')"
                                       " && document.body.innerText.includes('Server: running batch')"
                                       " && document.body.innerText")
            assert "Throughput: output tokens/s" in text and "Server: KV cache used (%)" in text
            await asyncio.sleep(2)  # a few more requests and telemetry samples in the screenshot
            await page.screenshot(screenshot)
    finally:
        ui.send_signal(signal.SIGTERM)  # forwarded to Locust, which stops the test and writes the summary
        try:
            ui.wait(30)
        finally:
            _kill_group(ui)
    assert screenshot.stat().st_size > 10_000
    summary = _summary(out)
    _assert_counts_agree(summary, out)
    assert summary["load"]["users"] == 4
    assert summary["telemetry"]["running_batch_peak"] == 4


# A row of Locust's statistics table with this name.
STATS_ROW = "Array.from(document.querySelectorAll('td')).some(td => td.textContent.trim() === '%s')"

# Fill the start form as a user would (React reads the DOM input events) and press Start.
START_FROM_FORM = """(() => {
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  for (const [name, value] of [['userCount', '4'], ['spawnRate', '50']]) {
    const input = document.querySelector(`input[name=${name}]`);
    setValue.call(input, value);
    input.dispatchEvent(new Event('input', {bubbles: true}));
  }
  document.querySelector('button[type=submit]').click();
  return true;
})()"""


# --- exit codes (issue 22): a dead server, Ctrl-C or SIGTERM --------------------------------------

def _spawn_headless(stub_url: str, out: Path, log: Path, run_time: str = "60s") -> subprocess.Popen:
    return _spawn("--url", stub_url, "--headless", "--users", "2", "--spawn-rate", "100", "--run-time", run_time,
                  "--out", str(out), *WORKLOAD, log=log)


def _wait_for(path: Path, lines: int, proc: subprocess.Popen, log: Path) -> None:
    while not (path.exists() and len(path.read_bytes().splitlines()) >= lines):
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)


def test_server_dying_ends_the_locust_run_with_exit_3(stub_server, tmp_path):
    stub = stub_server(itl_s=0.01)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = _spawn_headless(stub.url, out, log)
    try:
        _wait_for(out / "records.jsonl", 4, proc, log)
        asyncio.run_coroutine_threadsafe(stub.runner.cleanup(), stub.loop).result(30)
        code = proc.wait(120)  # the run time is 60 s: the server watch ends it first
    finally:
        _kill_group(proc)
    assert code == 3, log.read_text()[-3000:]
    summary = _summary(out)
    assert summary["abort_kind"] == "server" and summary["interrupted"] is False
    assert summary["abort_reason"].startswith(f"server stopped answering: {stub.url}/v1/models cannot be reached")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_pid_alone_stops_locust_with_exit_130(stub_server, tmp_path, sig):
    stub = stub_server(itl_s=0.005)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = _spawn_headless(stub.url, out, log)
    try:
        _wait_for(out / "records.jsonl", 4, proc, log)
        os.kill(proc.pid, sig)  # servesweep's PID only: not its group, as `kill` from another shell
        code = proc.wait(60)
    finally:
        _kill_group(proc)
    assert code == 130, log.read_text()[-3000:]
    summary = _summary(out)
    assert summary["interrupted"] is True and summary["abort_reason"] == "interrupted by signal"
    assert summary["completed"] >= 4
