"""The Locust integration's pure parts: statistics resolution, what a record logs on Locust's
entries, the UI tab's rows, the worker merge check and the summary. None of these modules imports
Locust (importing it monkey-patches the standard library), so they are tested in-process here."""

import datetime as dt
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from servesweep.loadgen.records import RecordWriter, RequestRecord
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workers import worker_records_path
from servesweep.locust.config import LocustRunConfig
from servesweep.locust.reporting import (
    ITL,
    METRIC_TYPE,
    PERCENTILES,
    TPOT,
    TTFT,
    bucket_ms,
    configure_stats,
    report_record,
)
from servesweep.locust.locust_summary import build_summary, worker_check
from servesweep.locust.webtab import LiveStats, server_rows


def _record(rid: int, sent: float = 0.0, ttft_s: float = 0.05, gaps_s: tuple[float, ...] = (0.01, 0.02, 0.03),
            level: str = "c4", **kw) -> RequestRecord:
    first = sent + ttft_s
    arrivals = [first]
    for g in gaps_s:
        arrivals.append(arrivals[-1] + g)
    base = dict(request_id=rid, level=level, warmup=False, scheduled_s=sent, sent_s=sent, wire_s=sent,
                first_token_s=first, end_s=arrivals[-1], chunk_arrivals_s=arrivals, prompt_tokens=10,
                completion_tokens=len(arrivals), http_status=200)
    base.update(kw)
    return RequestRecord(**base)


# --- Locust's statistics settings ---------------------------------------------------------------
@pytest.mark.parametrize("ms,bucket", [(0.4, 0), (7.6, 8), (147.2, 147), (3432.4, 3432), (9999.4, 9999),
                                       (12345.0, 12300), (58760.0, 58800)])
def test_buckets_keep_whole_milliseconds_below_ten_seconds(ms, bucket):
    # Locust's default would keep 147 as 150 and 3,432 as 3,400.
    assert bucket_ms(ms) == bucket


def test_buckets_are_monotonic_and_few():
    values = [x / 10 for x in range(0, 600_000, 7)]  # 0 .. 60 s in 0.7 ms steps
    keys = [bucket_ms(v) for v in values]
    assert keys == sorted(keys)
    assert all(abs(k - v) <= 0.5 for k, v in zip(keys, values) if v < 10_000)
    assert all(abs(k - v) / v <= 0.005 for k, v in zip(keys, values) if v >= 10_000)
    assert len(set(keys)) < 10_000 + 1_000


def test_configure_stats_sets_buckets_and_percentiles():
    module = SimpleNamespace(bucket_response_time=None, PERCENTILES_TO_REPORT=[0.95],
                             PERCENTILES_TO_STATISTICS=[0.95], PERCENTILES_TO_CHART=[0.95])
    configure_stats(module)
    assert module.bucket_response_time is bucket_ms
    assert module.PERCENTILES_TO_REPORT == module.PERCENTILES_TO_STATISTICS == module.PERCENTILES_TO_CHART \
        == PERCENTILES == [0.5, 0.9, 0.99]


# --- what one record logs -----------------------------------------------------------------------
class _Entry:
    def __init__(self) -> None:
        self.logged: list[tuple[float, int]] = []

    def log(self, response_time: float, length: int) -> None:
        self.logged.append((response_time, length))


class _Env:
    def __init__(self) -> None:
        self.fired: list[dict] = []
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.events = SimpleNamespace(request=SimpleNamespace(fire=lambda **kw: self.fired.append(kw)))
        self.stats = SimpleNamespace(get=lambda name, method: self.entries.setdefault((name, method), _Entry()))


def test_a_successful_request_logs_e2e_tokens_ttft_tpot_and_every_gap():
    env = _Env()
    record = _record(1, sent=1.0, ttft_s=0.05, gaps_s=(0.01, 0.02, 0.03))
    report_record(env, record, "/v1/completions", "http://h/v1/completions")
    (fired,) = env.fired
    assert fired["request_type"] == "POST" and fired["name"] == "/v1/completions"
    assert fired["response_time"] == pytest.approx(110.0) and fired["response_length"] == 4
    assert fired["exception"] is None
    assert env.entries[(TTFT, METRIC_TYPE)].logged == [(pytest.approx(50.0), 0)]
    assert env.entries[(TPOT, METRIC_TYPE)].logged == [(pytest.approx(20.0), 0)]  # (110 - 50) / (4 - 1)
    assert [t for t, _ in env.entries[(ITL, METRIC_TYPE)].logged] == pytest.approx([10.0, 20.0, 30.0])


def test_a_failed_request_carries_the_servers_message_and_logs_no_token_times():
    env = _Env()
    record = _record(2, http_status=400, error_kind="http_error", first_token_s=None, chunk_arrivals_s=[],
                     completion_tokens=None,
                     error_message="This model's maximum context length is 4096 tokens.")
    report_record(env, record, "/v1/chat/completions", "u")
    (fired,) = env.fired
    assert str(fired["exception"]) == "http_error (HTTP 400): This model's maximum context length is 4096 tokens."
    assert fired["response_length"] == 0
    assert env.entries == {}


# --- the UI tab ---------------------------------------------------------------------------------
def test_tab_rows_give_rates_and_percentiles():
    live = LiveStats()
    for i in range(10):
        live.add(_record(i, sent=float(i), ttft_s=0.010 * (i + 1), gaps_s=(0.005, 0.005)))
    live.add(_record(99, sent=3.0, error_kind="http_error", error_message="x"))
    live.add(_record(98, sent=3.0, error_kind="cancelled", error_message="x"))
    rows = {r["name"]: r for r in live.rows(now_s=10.0)}
    assert rows["Latency: TTFT (ms)"]["count"] == "10"
    assert rows["Latency: TTFT (ms)"]["p50"] == "55.0" and rows["Latency: TTFT (ms)"]["max"] == "100.0"
    assert rows["Latency: ITL (ms)"]["p50"] == "5.0" and rows["Latency: ITL (ms)"]["count"] == "20"
    assert rows["Failures: requests"]["count"] == "1"
    assert rows["Throughput: output tokens/s"]["count"] == "30"
    # 30 tokens over the 10 s the test has run (first send at 0 s)
    assert rows["Throughput: output tokens/s"]["now"] == "3"


def test_server_rows_show_batch_and_kv_or_say_why_not():
    samples = [{"t": 0.1, "running": 4, "waiting": 0, "kv_usage": 0.25},
               {"t": 0.2, "running": 8, "waiting": 2, "kv_usage": 0.5}]
    rows = {r["name"]: r for r in server_rows(samples, None)}
    assert rows["Server: running batch"]["now"] == "8.0" and rows["Server: running batch"]["max"] == "8.0"
    assert rows["Server: KV cache used (%)"]["max"] == "50.0"
    (row,) = server_rows([], "no server metrics: http://x/metrics: Not Found")
    assert row["name"] == "Server: metrics" and "Not Found" in row["now"]
    (row,) = server_rows([{"t": 0.1, "scrape_error": "connection refused"}], "vLLM Prometheus metrics")
    assert "connection refused" in row["now"]


# --- merge check and summary ----------------------------------------------------------------------
def _write(path: Path, records: list[RequestRecord]) -> None:
    with RecordWriter(path) as w:
        for r in records:
            w.write(r)


def test_worker_check_compares_the_merged_records_with_each_workers_file(tmp_path):
    a = [_record(i * 4096 + 0) for i in range(3)]
    b = [_record(i * 4096 + 1) for i in range(2)]
    _write(worker_records_path(tmp_path, 0), a)
    _write(worker_records_path(tmp_path, 1), b)
    check = worker_check(tmp_path, a + b, {0: 3, 1: 2}, {0, 1})
    assert check["merged_equals_union"] is True and check["lost"] == []
    assert check["per_worker"]["0"] == {"received": 3, "in_file": 3, "final_report": True}
    # worker 1 died: the master has fewer of its records than its file, and no final report
    check = worker_check(tmp_path, a + b[:1], {0: 3, 1: 1}, {0})
    assert check["merged_equals_union"] is False and check["lost"] == [1]
    # a worker on another machine: no file here, nothing to compare against
    assert worker_check(tmp_path, a, {0: 3, 7: 0}, {0, 7})["merged_equals_union"] is None
    # a worker that died before its first report is known from its file
    _write(worker_records_path(tmp_path, 2), [_record(2)])
    check = worker_check(tmp_path, a + b, {0: 3, 1: 2}, {0, 1})
    assert check["lost"] == [2] and check["per_worker"]["2"]["received"] == 0


def test_summary_counts_and_levels(tmp_path):
    config = LocustRunConfig(base_url="http://127.0.0.1:1", model="m", out_dir=tmp_path, slo=SLO(ttft_ms=60))
    records = [_record(i, sent=i * 0.1, level="c4") for i in range(4)]
    records += [_record(10 + i, sent=1 + i * 0.1, level="c8", ttft_s=0.08) for i in range(3)]
    records.append(_record(20, sent=2.0, level="c8", error_kind="stream_error", error_message="bad"))
    records.append(_record(21, sent=2.0, level="c8", error_kind="cancelled", error_message="stopped"))
    summary = build_summary(config, records, started_at=dt.datetime.now(dt.timezone.utc), host={}, load={},
                            locust_stats={"requests": 8})
    assert (summary["completed"], summary["failed"], summary["cancelled"]) == (7, 1, 1)
    assert [lv["label"] for lv in summary["levels"]] == ["c4", "c8"]
    assert [lv["spec"]["concurrency"] for lv in summary["levels"]] == [4, 8]
    assert summary["goodput"]["good_requests"] == 4  # TTFT 50 ms meets 60 ms, 80 ms does not
    assert summary["levels"][1]["failed"] == 1 and summary["locust"]["requests"] == 8
    assert math.isclose(summary["ttft_ms"]["max"], 80.0)


# --- the command's workload ------------------------------------------------------------------------
def _args(tmp_path, scenario_text: str | None, *argv: str):
    from servesweep.cli import build_parser

    args = ["locust", "--url", "http://127.0.0.1:9", *argv]
    if scenario_text is not None:
        path = tmp_path / "scenario.yaml"
        path.write_text(scenario_text)
        args += ["--scenario", str(path)]
    return build_parser().parse_args(args)


def test_a_closed_loop_scenario_gives_workload_slo_and_users(tmp_path):
    from servesweep.cli.locust import workload_and_users

    text = ("name: chatty\nworkload:\n  endpoint: chat\n  input_len: 64\n  output_len: 'uniform:8:16'\n"
            "load:\n  concurrency: [12]\nslo:\n  ttft_ms: 500\n  percentile: 90\n")
    workload, slo, users, name = workload_and_users(_args(tmp_path, text))
    assert (workload.endpoint, str(workload.output_len), users, name) == ("chat", "uniform:8:16", 12, "chatty")
    assert slo is not None and slo.ttft_ms == 500
    assert workload_and_users(_args(tmp_path, text, "--users", "3"))[2] == 3


def test_a_scenario_with_several_levels_needs_users(tmp_path):
    from servesweep.cli.locust import workload_and_users
    from servesweep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"3 concurrency levels .* give --users N"):
        workload_and_users(_args(tmp_path, "name: s\nload:\n  concurrency: [1, 4, 16]\n"))


def test_locust_command_line(tmp_path):
    from servesweep.cli.locust import locust_argv
    from servesweep.locust import LOCUSTFILE

    config = LocustRunConfig(base_url="http://127.0.0.1:9", model="m", out_dir=tmp_path)
    argv = locust_argv(_args(tmp_path, None, "--headless", "--users", "8", "--run-time", "30s",
                             "--processes", "4"), config, 8)
    assert argv[1:5] == ["-m", "locust", "-f", str(LOCUSTFILE)] and LOCUSTFILE.exists()
    assert "--headless" in argv and "--run-time" not in argv  # headless runs end through the plugin
    assert argv[argv.index("--processes") + 1] == "4" and argv[argv.index("--users") + 1] == "8"
    assert argv[argv.index("--master-bind-host") + 1] == "127.0.0.1"
    assert LocustRunConfig.from_option(argv[argv.index("--servesweep-config") + 1]) == config
    ui = locust_argv(_args(tmp_path, None, "--run-time", "30s"), config, None)
    assert ui[ui.index("--web-host") + 1] == "127.0.0.1" and ui[ui.index("--run-time") + 1] == "30s"
    worker = locust_argv(_args(tmp_path, None, "--worker", "--master-host", "10.0.0.1"), None, None)
    assert worker[5:] == ["--worker", "--master-host", "10.0.0.1", "--master-port", "5557"]


def test_a_missing_or_old_locust_is_named(monkeypatch):
    import importlib.metadata

    from servesweep.cli import locust as command
    from servesweep.errors import ConfigError

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.20.1")
    with pytest.raises(ConfigError, match=r"Locust 2\.20\.1 is too old .* 'locust>=2\.47'"):
        command.check_locust_installed()

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ConfigError, match=r"pip install 'servesweep\[locust\]'"):
        command.check_locust_installed()
