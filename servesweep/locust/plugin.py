"""servesweep inside Locust's runtime: options, per-process state, records, telemetry, summary, UI tab.

Every Locust process (the single process of a local run, the master, each worker) imports the
packaged locustfile, which calls `install()`. What each role does:

  local   builds prompts, runs users, writes records.jsonl, samples the server's metrics, writes
          summary.json when a test stops (and again when Locust quits);
  worker  builds prompts, runs users, writes records.worker-K.jsonl, and ships each finished
          record to the master inside its regular stats report (the `report_to_master` event),
          the same message that carries Locust's statistics of that request;
  master  runs no users; collects records from the reports into records.jsonl, samples the
          server's metrics once for the whole run, writes summary.json, serves the UI tab.

Stops: the master (or single process) watches the server. After a request that could not
connect, was cut off or timed out, and whenever no request has finished for QUIET_PROBE_S, it asks
the server for its model list (PROBE_TIMEOUT_S at most); a server that does not answer ends the
test (`abort_reason` in the summary; headless, Locust then quits), so a dead server is not hammered
with refused connections until --run-time. Ctrl-C or SIGTERM while a test runs stops it with
`interrupted: true` in the summary.

Clock: the master (or single process) takes the test's start instant; workers get it with the
spawn message (wall-clock seconds, as `servesweep_epoch`) and convert it to their own
`time.perf_counter`, so the records of all processes are on one timeline (exact on one machine,
as good as the hosts' clock sync across machines).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
import urllib.error
from dataclasses import fields
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import locust
import locust.stats
import orjson
from flask import request
from locust.runners import STATE_INIT, STATE_STOPPED, MasterRunner, WorkerRunner

from servesweep import auth, controlplane
from servesweep.backends.detect import detect_metrics
from servesweep.errors import EXIT_USAGE, ServesweepError
from servesweep.backends.telemetry import TelemetrySampler
from servesweep.loadgen.client import is_disconnect
from servesweep.loadgen.records import ERROR_CONNECTION, ERROR_TIMEOUT, RecordWriter, RequestRecord
from servesweep.loadgen.workers import worker_records_path
from servesweep.loadtest import host_info, set_aside_previous_run
from servesweep.locust.config import CONFIG_OPTION, EPOCH_OPTION, MAX_WORKERS, LocustRunConfig
from servesweep.locust.prompts import PreparedPrompt, build_pool
from servesweep.locust.reporting import configure_stats
from servesweep.locust.locust_summary import IdTally, RecordTally, build_summary, worker_check
from servesweep.locust.webtab import EXTENDED_TABLES, EXTENDED_TABS, TAB_KEY, LiveStats
from servesweep.results import write_summary

log = logging.getLogger("servesweep.locust")
USERS_OPTION = "servesweep_users"
RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
# How long a master waits, after a test stops, for the workers' last reports (they report every
# 3 s) before writing the summary; the summary is written again when Locust quits.
FINAL_REPORT_WAIT_S = 5.0
# A worker not heard from (report or heartbeat) for this long is not waited for: it has died.
SILENT_WORKER_S = 3.0
# The server watch (master or single process): how often it looks, how long without a finished
# request before it asks the server (longer than a worker's 3-second report), and how long the
# question may take.
WATCH_INTERVAL_S = 1.0
QUIET_PROBE_S = 10.0
PROBE_TIMEOUT_S = 5.0
# A process that cannot build its prompts tells the master (or, alone, itself) with this message.
PROMPTS_FAILED = "servesweep_prompts_failed"


def record_fields(record: RequestRecord) -> dict[str, Any]:
    """A record as plain values (no derived fields), for the worker -> master report."""
    return {name: getattr(record, name) for name in RECORD_FIELDS}


class ProcessState:
    """What one Locust process knows about the current servesweep test."""

    def __init__(self) -> None:
        self.environment: Any = None
        self.role = "local"
        self.config: LocustRunConfig | None = None
        self.config_text: str | None = None
        self.prompts: list[PreparedPrompt] = []
        self.prompts_for: tuple[str | None, int] | None = None  # (config text, process index) built for
        self.building: gevent.event.Event | None = None
        self.build_error: tuple[tuple[str | None, int], Exception] | None = None  # (built for, why it failed)
        self.next_prompt = 0
        self.prompt_pool_wrapped = False
        self.index = 0
        self.seq = 0
        self.epoch: float | None = None
        self.t0 = time.perf_counter()
        self.started_at: dt.datetime | None = None
        self.writer: RecordWriter | None = None
        self.pending: list[dict[str, Any]] = []
        self.final = False
        # No records are kept (a test of hours must not grow the process): the ids of every record
        # that reached this process since the test started, for the union check, and the running
        # statistics of those since the last statistics reset (servesweep.locust.locust_summary).
        self.ids = IdTally()
        self.tally = RecordTally()
        self.received: dict[int, int] = {}
        self.finished: set[int] = set()
        self.worker_index: dict[str, int] = {}  # Locust client id -> worker index (master)
        self.last_heard: dict[int, float] = {}  # worker index -> time.monotonic() of its last message
        self.live = LiveStats()
        # Locust's statistics were reset (the UI's Reset button, or --reset-stats after ramp-up) when
        # this many records had reached this process: the summary counts the records that reached
        # it afterwards, as Locust's statistics count the requests (or worker reports) that did.
        self.reset_at = 0
        self.reset_at_s: float | None = None
        self.reader: Any = None
        self.metrics_note: str | None = None
        self.telemetry: Any = None
        self.summary_written_for: Any = -1  # (records, interrupted, abort_reason) of the last summary
        self.finisher: gevent.Greenlet | None = None
        self.ender: gevent.Greenlet | None = None
        self.watcher: gevent.Greenlet | None = None
        self.interrupted = False  # Ctrl-C or SIGTERM stopped a running test
        self.abort_reason: str | None = None  # the server watch stopped the test
        self.abort_kind = "server"  # or "auth": the server refused the credentials (exit 2)
        self.ending = False  # servesweep itself is stopping the test (run time reached, server gone)
        self.suspect: str | None = None  # a failure that may mean the server is gone, not yet checked
        self.last_answer = time.monotonic()  # the last finished request or successful probe
        self.path = "/v1/completions"
        self.url = ""

    # --- configuration --------------------------------------------------------------------------
    def load_config(self, text: str | None) -> LocustRunConfig | None:
        if text and text != self.config_text:
            self.config = LocustRunConfig.from_option(text)
            self.config_text = text
            self.path = "/v1/chat/completions" if self.config.workload.endpoint == "chat" else "/v1/completions"
            self.url = self.config.base_url.rstrip("/") + self.path
        return self.config

    def ensure_prompts(self) -> None:
        """Build the prompt pool for the current configuration, once. Building yields to other
        greenlets between tokenizer calls (heartbeats, the spawn message, users starting): those
        that need the prompts meanwhile wait here for the one build."""
        while self.building is not None:
            self.building.wait()
        if self.config is None or self.prompts_for == (self.config_text, self.index):
            return
        key = (self.config_text, self.index)
        if self.build_error is not None and self.build_error[0] == key:
            raise self.build_error[1]  # failed once (a /tokenize that hangs): every user would wait it out again
        done = self.building = gevent.event.Event()
        started = time.perf_counter()
        try:
            self.prompts = build_pool(self.config, self.index, pause=lambda: gevent.sleep(0))
            self.prompts_for = key
        except Exception as exc:
            self.build_error = (key, exc)
            raise
        finally:
            self.building = None
            done.set()
        log.info("servesweep: %d prompts ready in %.1f s (process index %d)", len(self.prompts),
                 time.perf_counter() - started, self.index)

    # --- per request (user greenlets) -----------------------------------------------------------
    def next_request(self) -> tuple[PreparedPrompt, RequestRecord]:
        i = self.next_prompt
        self.next_prompt = i + 1
        if i >= len(self.prompts):
            self.prompt_pool_wrapped = True
        prepared = self.prompts[i % len(self.prompts)]
        users = getattr(self.environment.parsed_options, USERS_OPTION, None)
        record = RequestRecord(
            request_id=self.seq * MAX_WORKERS + self.index % MAX_WORKERS, level=f"c{users}" if users else "locust",
            warmup=False, scheduled_s=time.perf_counter() - self.t0,
            prompt_len_requested=prepared.item.prompt_len, output_len_requested=prepared.item.output_len,
        )
        self.seq += 1
        return prepared, record

    def add_record(self, record: RequestRecord) -> None:
        """A finished request (no greenlet switch in here: it must land in the same worker report as
        the Locust statistics of the same request)."""
        if self.writer is not None:
            self.writer.write(record)
        if self.role == "worker":
            self.pending.append(record_fields(record))
        else:
            self.ids.add(record.request_id)
            self.tally.add(record)
            self.live.add(record)
            kind = record.error_kind
            if kind is None:
                self.last_answer = time.monotonic()
            elif kind in (ERROR_CONNECTION, ERROR_TIMEOUT) or is_disconnect(record):
                self.suspect = f"{kind}: {record.error_message}"

    def now_s(self) -> float:
        return time.perf_counter() - self.t0

    def out_dir(self) -> Path:
        assert self.config is not None
        self.config.out_dir.mkdir(parents=True, exist_ok=True)
        return self.config.out_dir


STATE = ProcessState()


# --- Locust event listeners ---------------------------------------------------------------------
def _add_options(parser: Any, **_: Any) -> None:
    parser.add_argument(CONFIG_OPTION, default=None, include_in_web_ui=False,
                        help="servesweep's run configuration (JSON, written by `servesweep locust`)")


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    """A configuration this process cannot run with: one line on stderr, exit 2 (servesweep's usage
    code), or the code of the error met (3: the server stopped answering while prompts were built)."""
    print(f"servesweep: error: {auth.current().redact(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


def _exit_code(exc: Exception) -> int:
    return exc.exit_code if isinstance(exc, ServesweepError) else EXIT_USAGE


def _prompts_failed(environment: Any, exc: Exception) -> None:
    """This process cannot build its prompts (the server's /tokenize failed or hangs): the master (or
    this process, when alone) hears of it and ends the test with the reason, rather than the test
    running its whole time with no request sent and workers left building."""
    STATE.abort_kind = "server"
    environment.runner.send_message(PROMPTS_FAILED, {"index": STATE.index, "code": _exit_code(exc),
                                                     "message": f"cannot build prompts: {exc}"})


def _on_prompts_failed(environment: Any, msg: Any, **_: Any) -> None:
    state = STATE
    if state.abort_reason is not None or state.ending:
        return
    data = msg.data or {}
    who = f"worker {data.get('index')}: " if state.role == "master" else ""
    state.abort_reason = f"{who}{data.get('message')}"
    state.abort_kind = "auth" if data.get("code") == EXIT_USAGE else "server"
    log.error("servesweep: %s: stopping the test", state.abort_reason)
    gevent.spawn(_stop_test, environment, bool(getattr(environment.parsed_options, "headless", False)))


def _detect_metrics(base_url: str) -> tuple[Any, str]:
    """A metrics reader for the target, or None and why (sampling is optional): the attach-mode
    detection, which knows every backend's metric names, so no backend is named here."""
    return detect_metrics(base_url)


def _on_init(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    state = STATE
    state.environment = environment
    runner = runner or environment.runner
    state.role = ("master" if isinstance(runner, MasterRunner) else
                  "worker" if isinstance(runner, WorkerRunner) else "local")
    options = environment.parsed_options
    try:
        config = state.load_config(getattr(options, "servesweep_config", None))
    except ValueError as exc:
        _fail(f"{CONFIG_OPTION}: {exc}")
        return
    if config is None:
        if state.role != "worker":
            _fail(f"{CONFIG_OPTION} is missing: start Locust with `servesweep locust`")
        return  # a worker learns the configuration from the master's spawn message
    if state.role != "master":
        state.index = getattr(runner, "worker_index", 0) or 0
        try:
            state.ensure_prompts()
        except Exception as exc:  # noqa: BLE001 - one line for the user, whatever the cause
            _fail(f"cannot build prompts: {exc}", _exit_code(exc))
    if state.role != "worker":
        runner.register_message(PROMPTS_FAILED, _on_prompts_failed)
        state.reader, state.metrics_note = _detect_metrics(config.base_url)
        log.info("servesweep: %s", state.metrics_note)
        _wrap_start(runner, options)
    if web_ui is not None:
        _install_tab(environment, web_ui)


def _wrap_start(runner: Any, options: Any) -> None:
    """Record the target user count in the options the master forwards with every spawn message, so
    each record is labelled with the total users of the moment (c8, c32, ...) on every worker."""
    original = runner.start

    def start(user_count: int, spawn_rate: float, *args: Any, **kwargs: Any) -> Any:
        setattr(options, USERS_OPTION, user_count)
        return original(user_count, spawn_rate, *args, **kwargs)

    runner.start = start


def _on_test_start(environment: Any, **_: Any) -> None:
    state = STATE
    options = environment.parsed_options
    if state.role == "worker":
        config = state.load_config(getattr(options, "servesweep_config", None))
        if config is None:
            log.error("servesweep: the master sent no %s; this worker cannot send requests", CONFIG_OPTION)
            return
        state.index = getattr(environment.runner, "worker_index", 0) or 0
        epoch = getattr(options, EPOCH_OPTION, None)
        state.epoch = epoch
        # The master's start instant on this process's perf_counter clock.
        state.t0 = time.perf_counter() - (time.time() - epoch) if epoch else time.perf_counter()
        try:
            state.ensure_prompts()
        except Exception as exc:  # noqa: BLE001 - the master ends the test with the reason
            _prompts_failed(environment, exc)
            return
        path = worker_records_path(state.out_dir(), state.index)
        path.unlink(missing_ok=True)
        if state.writer is not None:
            state.writer.close()
        state.writer = RecordWriter(path)
        state.pending, state.final = [], False
    else:
        config = state.config
        assert config is not None
        epoch = time.time()
        state.t0 = time.perf_counter()
        state.epoch = epoch
        setattr(options, EPOCH_OPTION, epoch)
        if getattr(options, USERS_OPTION, None) is None:
            setattr(options, USERS_OPTION, getattr(environment.runner, "target_user_count", None))
        if state.writer is not None:
            state.writer.close()
        set_aside_previous_run(state.out_dir())
        state.writer = RecordWriter(config.out_dir / "records.jsonl")
        state.ids, state.tally = IdTally(), RecordTally(config.slo)
        state.received, state.finished = {}, set()
        state.worker_index, state.last_heard = {}, {}
        state.live.reset()
        state.reset_at, state.reset_at_s = 0, None
        state.summary_written_for = -1
        for greenlet in (state.finisher, state.ender, state.watcher):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=False)
        state.finisher = state.ender = None
        state.interrupted, state.abort_reason, state.ending, state.suspect = False, None, False, None
        state.abort_kind = "server"
        state.last_answer = time.monotonic()
        _start_telemetry(state, config)
        if config.run_time_s and getattr(options, "headless", False):
            state.ender = gevent.spawn(_end_after, environment, config.run_time_s)
        state.watcher = gevent.spawn(_watch_server, environment)
    state.started_at = dt.datetime.now(dt.timezone.utc)
    state.seq = 0
    state.next_prompt = 0
    state.prompt_pool_wrapped = False


def _start_telemetry(state: ProcessState, config: LocustRunConfig) -> None:
    if state.telemetry is not None:
        state.telemetry.stop()
        state.telemetry = None
    if state.reader is None:
        return
    # Under Locust, threading is gevent's: the sampler runs as a greenlet of this process.
    state.telemetry = TelemetrySampler(state.reader, config.out_dir / "telemetry.jsonl",
                                       interval_s=config.telemetry_interval_s)
    state.telemetry.start(state.t0)


def _on_test_stop(environment: Any, **_: Any) -> None:
    state = STATE
    if state.config is None or state.started_at is None:
        return
    if state.role == "worker":
        state.final = True
        # Ship the last records and statistics now rather than at the next 3-second report.
        send = getattr(environment.runner, "_send_stats", None)
        if send is not None:
            try:
                send()
            except Exception as exc:  # noqa: BLE001 - the periodic report will carry them instead
                log.warning("servesweep: could not send the final report now: %s", exc)
        return
    if state.role == "local":
        _write_summary(environment)
        return
    if state.finisher is None:
        state.finisher = gevent.spawn(_finish_after_reports, environment)


def _finish_after_reports(environment: Any) -> None:
    state = STATE
    deadline = time.monotonic() + FINAL_REPORT_WAIT_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        alive = {i for i, t in state.last_heard.items() if now - t < SILENT_WORKER_S}
        if alive <= state.finished:
            break
        gevent.sleep(0.1)
    _write_summary(environment)
    state.finisher = None


def _end_after(environment: Any, seconds: float) -> None:
    """A headless run's end: stop the test (workers stop and send their last reports), wait for
    those reports, write the summary, then quit Locust."""
    gevent.sleep(seconds)
    log.info("servesweep: run time of %g s reached, stopping the test", seconds)
    _stop_test(environment, quit_after=True)


def _stop_test(environment: Any, quit_after: bool) -> None:
    """servesweep ends the test: stop it, wait for the workers' last reports and the summary, and
    (headless) quit Locust."""
    STATE.ending = True
    runner = environment.runner
    runner.stop()
    finisher = STATE.finisher
    if finisher is not None:
        finisher.join(FINAL_REPORT_WAIT_S + 1)
    if quit_after:
        runner.quit()


def probe_server(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the server answers its model list (any HTTP status) in time, else why not."""
    url = base_url.rstrip("/") + "/v1/models"
    try:
        with controlplane.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        if isinstance(why, TimeoutError) or "timed out" in str(why):
            return f"{url} did not answer within {timeout_s:g} s"
        return f"{url} cannot be reached ({why})"
    return None


def _watch_server(environment: Any) -> None:
    """While a test runs: ask the server after a failure a dead server causes, or after
    QUIET_PROBE_S without a finished request; end the test when it does not answer."""
    state = STATE
    config = state.config
    if config is None:
        return
    while True:
        gevent.sleep(WATCH_INTERVAL_S)
        runner = environment.runner
        if runner is None or state.ending or runner.state in (STATE_INIT, STATE_STOPPED):
            continue
        suspect, state.suspect = state.suspect, None
        quiet = time.monotonic() - state.last_answer
        if suspect is None and quiet < QUIET_PROBE_S:
            continue
        reason = probe_server(config.base_url)
        if reason is None:
            state.last_answer = time.monotonic()
            continue
        if state.ending or runner.state in (STATE_INIT, STATE_STOPPED):
            continue
        what = f"last failed request: {suspect}" if suspect else f"no request finished for {quiet:.0f} s"
        state.abort_reason = f"server stopped answering: {reason}; {what}"
        log.error("servesweep: %s: stopping the test", state.abort_reason)
        if state.ender is not None:
            state.ender.kill(block=False)
            state.ender = None
        state.watcher = None
        _stop_test(environment, quit_after=bool(getattr(environment.parsed_options, "headless", False)))
        return


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    state = STATE
    if state.started_at is None or state.epoch is None:
        return
    data["servesweep"] = {"index": state.index, "epoch": state.epoch, "records": state.pending,
                          "final": state.final}
    state.pending = []


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    state = STATE
    payload = data.get("servesweep")
    if payload is None or payload.get("epoch") != state.epoch:
        return  # not ours, or late from an earlier test
    index = int(payload["index"])
    state.worker_index[client_id] = index
    state.last_heard[index] = time.monotonic()
    records = [RequestRecord.from_dict(r) for r in payload["records"]]
    for record in records:
        state.add_record(record)
    state.received[index] = state.received.get(index, 0) + len(records)
    if payload.get("final"):
        state.finished.add(index)


def _mark_reset() -> None:
    state = STATE
    if state.role != "worker" and state.started_at is not None:
        state.reset_at, state.reset_at_s = state.ids.count, state.now_s()
        state.tally = RecordTally(state.config.slo if state.config is not None else None)
        state.live.reset()
        state.summary_written_for = -1
        log.info("servesweep: statistics reset at %.1f s: the summary counts requests finished after it",
                 state.reset_at_s)


def _on_reset_stats(**_: Any) -> None:
    _mark_reset()


def _on_spawning_complete(user_count: int, **_: Any) -> None:
    environment = STATE.environment
    if environment is not None and getattr(environment, "reset_stats", False):
        _mark_reset()  # Locust's --reset-stats: its statistics restart once the users are spawned


def _on_heartbeat(client_id: str, timestamp: float, **_: Any) -> None:
    index = STATE.worker_index.get(client_id)
    if index is not None:
        STATE.last_heard[index] = time.monotonic()


def _on_quitting(environment: Any, **_: Any) -> None:
    """Locust is shutting down. On Ctrl-C or SIGTERM it fires this while a test may still run (its
    own `runner.quit()` comes after): stop the test first, so the requests cut off are recorded as
    cancelled and every finished one is in the summary."""
    state = STATE
    if state.role == "worker" or state.started_at is None or state.config is None:
        return
    runner = environment.runner
    if runner is not None and runner.state not in (STATE_INIT, STATE_STOPPED) and not state.ending:
        state.interrupted = True  # a signal (Ctrl-C, SIGTERM) ends Locust while the test runs
        state.ending = True
        runner.stop()  # fires test_stop: the local summary, or the master's wait for the last reports
    if state.finisher is not None:
        state.finisher.join(FINAL_REPORT_WAIT_S + 1)
        state.finisher = None
    _write_summary(environment)


def _on_quit(**_: Any) -> None:
    if STATE.writer is not None:
        STATE.writer.close()


def _locust_stats(environment: Any) -> dict[str, Any]:
    stats = environment.stats
    entries = {f"{e.method} {e.name}": {"requests": e.num_requests, "failures": e.num_failures}
               for e in stats.entries.values()}
    return {"version": locust.__version__, "requests": stats.total.num_requests,
            "failures": stats.total.num_failures, "entries": entries}


def _write_summary(environment: Any) -> None:
    state = STATE
    config = state.config
    if config is None or state.started_at is None:
        return
    written_for = (state.tally.count, state.interrupted, state.abort_reason)
    if state.summary_written_for == written_for:
        return  # nothing new since the last summary of this test
    if state.telemetry is not None:
        state.telemetry.stop()  # its samples stay for the summary; a new test starts a new sampler
    options = environment.parsed_options
    load = {"mode": "closed", "generator": "locust", "role": state.role,
            "users": getattr(options, USERS_OPTION, None), "spawn_rate": getattr(options, "spawn_rate", None),
            "run_time_s": config.run_time_s or getattr(options, "run_time", None)}
    workers = None
    if state.role == "master":
        workers = worker_check(config.out_dir, state.ids, state.received, state.finished)
    counted = state.tally
    summary = build_summary(
        config, counted, started_at=state.started_at, host=host_info(), load=load,
        locust_stats=_locust_stats(environment), telemetry=state.telemetry, metrics_note=state.metrics_note,
        workers=workers, prompt_pool_wrapped=state.prompt_pool_wrapped,
    )
    if state.reset_at_s is not None:
        summary["stats_reset_at_s"] = state.reset_at_s
        summary["excluded_before_reset"] = state.reset_at
    summary["interrupted"] = state.interrupted
    if state.interrupted:
        summary["abort_reason"] = "interrupted by signal"
    elif state.abort_reason:
        summary["abort_reason"], summary["abort_kind"] = state.abort_reason, state.abort_kind
    if state.writer is not None and state.writer.error is not None:
        summary["output_error"] = state.writer.describe_error()
    telemetry_error = getattr(state.telemetry, "write_error", None)
    if telemetry_error:
        summary["output_error"] = "; ".join(e for e in (summary.get("output_error"), telemetry_error) if e)
    write_summary(config.out_dir, summary)
    state.summary_written_for = written_for
    log.info("servesweep: %s (%d requests: %d ok, %d failed, %d cancelled)", config.out_dir / "summary.json",
             summary["completed"] + summary["failed"], summary["completed"], summary["failed"], summary["cancelled"])


# --- the web UI tab ------------------------------------------------------------------------------
def _install_tab(environment: Any, web_ui: Any) -> None:
    web_ui.template_args["extended_tabs"] = EXTENDED_TABS
    web_ui.template_args["extended_tables"] = EXTENDED_TABLES

    @web_ui.app.after_request
    def _extend_stats(response: Any) -> Any:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        state = STATE
        samples = state.telemetry.samples if state.telemetry is not None else []
        rows = state.live.rows(state.now_s(), samples, state.metrics_note)
        body = orjson.loads(response.get_data())
        body["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        response.set_data(orjson.dumps(body))
        return response


def install() -> None:
    """Register servesweep's listeners on Locust's events and its statistics settings."""
    auth.use(auth.from_handover())  # `servesweep locust` hands its credentials over in the environment
    if not hasattr(locust.stats, "bucket_response_time"):
        _fail(f"Locust {locust.__version__} cannot keep millisecond buckets (no locust.stats.bucket_response_time): "
              "pip install 'locust>=2.47'")
    configure_stats(locust.stats)
    events = locust.events
    events.init_command_line_parser.add_listener(_add_options)
    events.init.add_listener(_on_init)
    events.test_start.add_listener(_on_test_start)
    events.test_stop.add_listener(_on_test_stop)
    events.report_to_master.add_listener(_on_report_to_master)
    events.worker_report.add_listener(_on_worker_report)
    events.heartbeat_sent.add_listener(_on_heartbeat)
    events.reset_stats.add_listener(_on_reset_stats)
    events.spawning_complete.add_listener(_on_spawning_complete)
    events.quitting.add_listener(_on_quitting)
    events.quit.add_listener(_on_quit)
