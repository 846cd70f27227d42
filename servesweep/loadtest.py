"""One load test: probe the target, run the levels, write records and the summary.

Data flow: a target (a URL, possibly of a server a backend launched) -> `LoadRunner` ->
`records.jsonl` (as each request completes) and the running statistics -> `summary.json` (also
when interrupted); with `report_interval_s`, `intervals.jsonl` as each interval ends, then
`intervals.png` and a drift verdict in the summary (servesweep.loadgen.intervals).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from servesweep import auth, controlplane
from servesweep.backends.base import LaunchedServer, Telemetry
from servesweep.confidence import expand_repeats, more_repeats, precision_report, repeats_ci
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen import intervals as soak
from servesweep.loadgen.disk import RecordsSpaceWatch, check_records_space
from servesweep.loadgen.fit import ContextLimit, check_lengths, check_sessions, clip_trace, context_limit
from servesweep.loadgen.records import (ERROR_CANCELLED, RECORDS_FILE, RECORDS_FULL, RecordWriter, RequestRecord,
                                        describe_dropped)
from servesweep.loadgen.load_runner import LevelResult, LoadRunner, RunnerHooks, RunnerOptions, RunOutcome, run_async
from servesweep.loadgen.stats import SLO, RunStats
from servesweep.loadgen.target import TargetInfo, check_loopback, probe_target
from servesweep.loadgen.tokenizer import (SERVER, LocalTokenizer, TokenizerLike, control_timeout, open_tokenizer,
                                          tokenizer_source)
from servesweep.loadgen.workers import WorkerPool, check_merge
from servesweep.errors import ConfigError, OutputError
from servesweep.loadgen.sessions import SessionSpec
from servesweep.loadgen.traces import read_trace
from servesweep.loadgen.workload import Workload
from servesweep.prefix_check import check_reset_target, prefix_cache_summary, reset_prefix_cache
from servesweep.results import SUMMARY_FILE, build_summary, ensure_writable_dir, level_entry, write_summary


class LoadTestConfig(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    base_url: str
    model: str | None = None
    tokenizer_dir: Path | None = None
    workload: Workload = Workload()
    levels: list[LoadLevel]
    slo: SLO | None = None
    out_dir: Path
    allow_remote: bool = False
    keep_text: bool = False
    show_progress: bool | None = None
    workers: int = Field(default=1, ge=1)  # load-generator processes (see loadgen/workers.py)
    # A trace to replay (a level with arrival "trace") or multi-turn sessions (arrival "sessions").
    trace_file: Path | None = None
    trace_format: str | None = None
    trace_speed: float = 1.0
    sessions: SessionSpec | None = None
    # How much of each record records.jsonl keeps (servesweep.loadgen.records: full, requests, none).
    records: Literal["full", "requests", "none"] = RECORDS_FULL
    # Soak runs: seconds per interval of the per-interval summaries (intervals.jsonl); None: none.
    report_interval_s: float | None = Field(default=None, gt=0)
    # Each level this many times in a row, fresh prompts each time; the summary's ci95 gives the
    # mean and 95 % t-interval over the repeats (servesweep.confidence).
    repeats: int = Field(default=1, ge=1)
    # Keep repeating a level (at least 2 repeats) until the 95 % interval of its output tok/s is
    # within target_precision x the mean, or it has max_repeats repeats.
    target_precision: float | None = Field(default=None, gt=0, lt=1)
    max_repeats: int = Field(default=10, ge=2)
    # POST vLLM's /reset_prefix_cache before each level (and repeat); loopback targets only.
    reset_prefix_cache: bool = False
    # The names of the run's two files in out_dir: a load run beside other files (the accuracy gate
    # under load, in a configuration's directory) gives its own, so no level's files are taken.
    records_file: str = RECORDS_FILE
    summary_file: str = SUMMARY_FILE


class ServerWatch(Protocol):
    def poll_failure(self) -> str | None:
        """A reason when the server under test has died, else None."""
        ...


@dataclass(eq=False)
class RunningLoad:
    """What a measurement taken while the load runs (`run_load_test(during=...)`) sees of it: the
    load's clock, its first completed request, its end; after the run, its outcome (with the records
    kept: servesweep.quality.gate.under_load needs their chunk times)."""

    runner: LoadRunner
    base_url: str
    model: str
    first: RequestRecord | None = None
    first_done: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: RunOutcome | None = None

    def clock(self) -> float:
        """Seconds on the records' clock (from the runner's t0)."""
        return time.perf_counter() - self.runner.t0

    @property
    def abort_reason(self) -> str | None:
        return self.runner.outcome.abort_reason

    async def first_completion(self) -> RequestRecord | None:
        """Wait until the load's first request completed (ok or failed), or the load ended first."""
        waits = {asyncio.ensure_future(self.first_done.wait()), asyncio.ensure_future(self.ended.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        return self.first


class _ObservedRecords(RecordWriter):
    """The load's records file; it also tells a measurement when the first request has completed."""

    def __init__(self, path: Path, keep: str, running: Callable[[], RunningLoad | None]) -> None:
        super().__init__(path, keep=keep, background=True)
        self._running = running

    def write(self, record: RequestRecord) -> None:
        super().write(record)
        running = self._running()
        if running is not None and running.first is None and record.error_kind != ERROR_CANCELLED:
            running.first = record
            running.first_done.set()


async def _run_with(runner: LoadRunner, running: RunningLoad,
                    during: Callable[[RunningLoad], Awaitable[None]]) -> RunOutcome:
    """The load, and `during` beside it; when `during` returns (or fails) the load is stopped.
    What the load raised (prompts that cannot be built) is raised after both have ended."""
    load = asyncio.create_task(runner.run())
    load.add_done_callback(lambda _: running.ended.set())
    try:
        await during(running)
    finally:
        runner.stop()
        await asyncio.wait({load})
        if not load.cancelled():
            load.exception()  # retrieved here; raised below when `during` itself did not raise
    outcome = load.result()
    running.outcome = outcome
    return outcome


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }


# What one load test writes into its output directory.
RUN_FILES = (SUMMARY_FILE, RECORDS_FILE, "records.worker-*.jsonl", "telemetry.jsonl",
             soak.INTERVALS_FILE, soak.INTERVALS_PLOT)


def run_files(config: LoadTestConfig) -> tuple[str, ...]:
    """The files (glob patterns) one load test writes into its output directory: RUN_FILES, or, for
    a run with its own file names (beside other files), those two only."""
    if (config.records_file, config.summary_file) == (RECORDS_FILE, SUMMARY_FILE):
        return RUN_FILES
    return (config.summary_file, config.records_file)


def set_aside_previous_run(out: Path, files: tuple[str, ...] = RUN_FILES) -> Path | None:
    """Move an earlier run's files out of `out` into `out/previous/<time>/`, so this run's files hold
    this run only (records are appended as they complete) and nothing measured before is lost."""
    found = [f for pattern in files for f in out.glob(pattern)]
    if not found:
        return None
    stamp = dt.datetime.fromtimestamp(max(f.stat().st_mtime for f in found), dt.timezone.utc)
    dest = out / "previous" / stamp.strftime("%Y%m%dT%H%M%S.%fZ")
    dest.mkdir(parents=True, exist_ok=True)
    for f in found:
        shutil.move(str(f), dest / f.name)
    print(f"servesweep: {out} held an earlier run; its files were moved to {dest}", file=sys.stderr)
    return dest


async def pick_tokenizer(
    session: aiohttp.ClientSession, config: LoadTestConfig, target: TargetInfo
) -> TokenizerLike | None:
    """The tokenizer by the one rule (loadgen.tokenizer.tokenizer_source); /tokenize calls get the
    run's --timeout where it is shorter than CONTROL_TIMEOUT_S."""
    timeout = control_timeout(config.workload.request_timeout_s)
    source = await tokenizer_source(session, target.base_url, target.model, config.tokenizer_dir, target.root,
                                    timeout_s=timeout)
    return open_tokenizer(source, session, target.base_url, target.model, timeout_s=timeout)


def _level_entry(result: LevelResult, telemetry: Telemetry | None) -> dict[str, Any]:
    return level_entry(result.level.label, result.level.model_dump(exclude_none=True), result.start_s, result.end_s,
                       result.prompt_pool_wrapped, result.summary, telemetry)


class _SignalsBeforeLoad:
    """SIGINT and SIGTERM before the load starts (probing the target, a /tokenize that hangs) cancel
    the preparation, so the run ends as interrupted, with a summary, instead of being killed by the
    signal with nothing on disk. `release()` hands the signals over to the load (the runner's own)."""

    def __init__(self) -> None:
        self.heard = False
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._on_signal)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass

    def _on_signal(self) -> None:
        if not self.heard and self._task is not None:
            self.heard = True
            self._task.cancel()

    def release(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed = []


async def run_load_test(
    config: LoadTestConfig,
    telemetry: Telemetry | None = None,
    server_watch: ServerWatch | None = None,
    server_info: dict[str, Any] | None = None,
    telemetry_tail_s: float = 1.0,
    during: Callable[[RunningLoad], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run every level and return the summary (also written to `out_dir/summary.json`).

    `during`: a measurement taken while the load runs (the accuracy gate under load), given the
    `RunningLoad`; the load runs until it returns, then is stopped. One process, one level.
    Interrupted (SIGINT, SIGTERM) before the load started: a summary that says so, no levels."""
    started = dt.datetime.now(dt.timezone.utc)
    signals = _SignalsBeforeLoad()
    try:
        return await _load_test(config, telemetry, server_watch, server_info, telemetry_tail_s, during, signals)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not signals.heard or task is None or task.cancelling() > 1:
            raise
        task.uncancel()
        return _interrupted_before_load(config, started)
    finally:
        signals.release()


def run_on_server(server: LaunchedServer, config: LoadTestConfig) -> dict[str, Any]:
    """One load test on a server servesweep launched, as `run`, the sweep, the verification and the
    headroom all take it: the server sampled into the run's telemetry.jsonl, its death ending the
    load, its facts (command, version, KV pool) in the summary."""
    return run_async(run_load_test(config, telemetry=server.telemetry(config.out_dir / "telemetry.jsonl"),
                                   server_watch=server, server_info=server.info()))


def _interrupted_before_load(config: LoadTestConfig, started: dt.datetime) -> dict[str, Any]:
    summary = build_summary(
        target={"url": config.base_url, "model": config.model}, workload=config.workload.describe(),
        seed=config.workload.seed, levels_requested=[lv.model_dump(exclude_none=True) for lv in config.levels],
        slo=config.slo.model_dump(exclude_none=True) if config.slo else None, tokenizer=None, started_at=started,
        host=host_info(), stats=RunStats(config.slo).summary(), levels=[], interrupted=True,
        abort_reason="interrupted by signal before the load started", run={"abort_kind": None})
    write_summary(config.out_dir, summary, config.summary_file)
    return summary


def _checked(config: LoadTestConfig) -> LoadTestConfig:
    """The config as the run takes it: a loopback target unless allowed, repeats as levels (a
    target precision needs an interval, so two at least)."""
    if not config.allow_remote:
        check_loopback(config.base_url)
    if config.target_precision is not None and config.repeats < 2:
        config = config.model_copy(update={"repeats": 2})  # an interval needs two
    if config.repeats > 1:
        if config.trace_file is not None or config.sessions is not None:
            raise ConfigError("--repeats repeats closed- and open-loop levels; not a trace replay or sessions")
        config = config.model_copy(update={"levels": expand_repeats(config.levels, config.repeats)})
    if config.reset_prefix_cache:
        check_reset_target(config.base_url)
    return config


def _check_processes(config: LoadTestConfig, trace: list | None,
                     during: Callable[[RunningLoad], Awaitable[None]] | None) -> None:
    """What several load-generator processes cannot do, refused before any of them starts."""
    if config.workers > 1 and (trace is not None or config.sessions is not None):
        raise ConfigError("--workers splits closed- and open-loop levels only; replay a trace or run "
                          "sessions with one worker")
    if config.workers > 1 and config.report_interval_s:
        raise ConfigError("--report-interval needs one load-generator process; leave out --workers")
    if during is not None and (config.workers > 1 or len(config.levels) != 1):
        raise ConfigError("a measurement during the load takes one level in one load-generator process")
    if config.workers > 1 and config.target_precision is not None:
        raise ConfigError("--target-precision needs one load-generator process; leave out --workers")
    if config.workers > 1 and config.reset_prefix_cache:
        raise ConfigError("--reset-prefix-cache needs one load-generator process; leave out --workers")


@dataclass(eq=False)
class _Intervals:
    """A soak's per-interval rows (the runner's on_interval), each written as the run goes so that
    a soak stopped hard keeps its trend; a full disk stops the file, not the rows in memory (the
    drift verdict)."""

    out: Path
    interval_s: float
    telemetry: Telemetry | None
    rows: list[soak.IntervalRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why intervals.jsonl stopped (disk full), if it did

    def __call__(self, level: LoadLevel, index: int, start: float, end: float, stats: RunStats,
                 in_flight: int) -> None:
        row = soak.interval_row(level.label, index, start, end, self.interval_s, stats,
                                self.telemetry.window_stats(start, end) if self.telemetry is not None else None,
                                in_flight)
        self.rows.append(row)
        if self.errors:
            return
        try:
            soak.write_row(self.out, row)
        except OutputError as exc:
            self.errors.append(str(exc))


@dataclass(eq=False)
class _Run:
    """One load test between its preparation and its summary: what was probed and prepared."""

    config: LoadTestConfig
    out: Path
    target: TargetInfo
    limit: ContextLimit
    trace: list | None
    length_notes: list[str]
    tokenizer: TokenizerLike | None
    started: dt.datetime
    split: dict[str, Any] | None
    intervals: _Intervals
    reset_notes: list[str] = field(default_factory=list)
    runner: LoadRunner | WorkerPool | None = None
    writer: RecordWriter | None = None
    running: RunningLoad | None = None  # with `during`: what the measurement sees of the load


async def _runner_hooks(run: _Run, session: aiohttp.ClientSession, telemetry: Telemetry | None) -> RunnerHooks:
    """The single-process runner's hooks: telemetry read at each level's edges, repeats added
    until the target precision, the prefix cache reset before each level."""
    config, hooks = run.config, RunnerHooks()
    if telemetry is not None:
        # A reading of the server's counters right at each level's edges, so the server-side
        # means cover the measured window only (not its warm-up, nor the next level's).
        async def edge(_level: LoadLevel) -> None:
            await asyncio.get_running_loop().run_in_executor(None, telemetry.sample_now)

        hooks.before_level = hooks.after_level = edge
    if config.target_precision is not None:
        hooks.more_levels = more_repeats(config.target_precision, max(config.max_repeats, config.repeats))
    if config.reset_prefix_cache:
        why_not = await reset_prefix_cache(session, run.target.base_url)
        if why_not is not None:
            run.reset_notes.append(f"--reset-prefix-cache: not done: {why_not}")
        else:
            async def reset(level: LoadLevel) -> None:
                failed = await reset_prefix_cache(session, run.target.base_url)
                if failed is not None:
                    run.reset_notes.append(f"level {level.label}: prefix cache not reset: {failed}")

            hooks.level_prelude = reset
    return hooks


async def _make_runner(run: _Run, session: aiohttp.ClientSession, telemetry: Telemetry | None,
                       during: Callable[[RunningLoad], Awaitable[None]] | None) -> None:
    """The load driver: a pool of worker processes, or one runner (writing the records itself)."""
    config, target = run.config, run.target
    if config.workers > 1:
        tokenizer = run.tokenizer
        source = (str(tokenizer.model_dir) if isinstance(tokenizer, LocalTokenizer) else
                  SERVER if tokenizer is not None else None)
        run.runner = WorkerPool(config.workers, target.base_url, target.model, config.workload, config.levels,
                                run.out, source, config.slo, config.keep_text, records=config.records,
                                context_limit=run.limit.tokens)
        return
    hooks = await _runner_hooks(run, session, telemetry)
    path = run.out / config.records_file
    run.writer = (_ObservedRecords(path, config.records, lambda: run.running) if during
                  else RecordWriter(path, keep=config.records, background=True))
    run.runner = LoadRunner(target.base_url, target.model, config.workload, config.levels, run.writer, run.tokenizer,
                            options=RunnerOptions(
                                slo=config.slo, keep_text=config.keep_text, show_progress=config.show_progress,
                                trace=run.trace, sessions=config.sessions, interval_s=config.report_interval_s,
                                on_interval=run.intervals, context_limit=run.limit.tokens,
                                keep_records=during is not None),
                            hooks=hooks)
    if during is not None:
        run.running = RunningLoad(run.runner, target.base_url, target.model)


async def _drive(run: _Run, telemetry: Telemetry | None, server_watch: ServerWatch | None,
                 telemetry_tail_s: float, during: Callable[[RunningLoad], Awaitable[None]] | None,
                 signals: _SignalsBeforeLoad, restore_cpus: set[int] | None) -> RunOutcome:
    """Run the load (and `during` beside it), watched; everything it started is stopped after."""
    runner = run.runner
    assert runner is not None
    watcher = asyncio.create_task(_watch_server(server_watch, runner)) if server_watch is not None else None
    space_watch = asyncio.create_task(RecordsSpaceWatch(run.out, run.config.levels, run.config.records).run()
                                      if during is None else asyncio.sleep(0))
    if telemetry is not None:
        telemetry.start(runner.t0)
    signals.release()  # the load's own stop on signals takes over (LoadRunner.run)
    try:
        if during is not None and run.running is not None:
            outcome = await _run_with(runner, run.running, during)
        else:
            outcome = await runner.run()
        if telemetry is not None and not outcome.interrupted:
            # A second of idle samples shows the server draining back to empty.
            await asyncio.sleep(telemetry_tail_s)
    finally:
        space_watch.cancel()
        if watcher is not None:
            watcher.cancel()
        if telemetry is not None:
            telemetry.stop()
        if run.writer is not None:
            run.writer.close()
        if restore_cpus is not None:
            os.sched_setaffinity(0, restore_cpus)
    return outcome


async def _load_test(config: LoadTestConfig, telemetry: Telemetry | None, server_watch: ServerWatch | None,
                     server_info: dict[str, Any] | None, telemetry_tail_s: float,
                     during: Callable[[RunningLoad], Awaitable[None]] | None,
                     signals: _SignalsBeforeLoad) -> dict[str, Any]:
    config = _checked(config)
    out = ensure_writable_dir(config.out_dir)
    set_aside_previous_run(out, run_files(config))
    split = (server_info or {}).get("cpu_split")
    restore_cpus = _pin_client(split["client_cpus"]) if split else None
    started = dt.datetime.now(dt.timezone.utc)
    async with controlplane.session() as probe_session:
        target = await probe_target(probe_session, config.base_url, config.model)
        trace = read_trace(config.trace_file, config.trace_format, config.trace_speed) if config.trace_file else None
        # Before any load (and before a prompt is built): lengths against the model's context.
        limit = context_limit(target.max_model_len, f"{target.base_url}/v1/models")
        length_notes = check_workload_lengths(config, limit, trace)
        tokenizer = await pick_tokenizer(probe_session, config, target)
        _check_processes(config, trace, during)
        if during is None:  # a load measured beside stops when the measurement ends, not at its bound
            check_records_space(out, config.levels, config.workload, config.records,
                                len(trace) if trace is not None else None)
        run = _Run(config, out, target, limit, trace, length_notes, tokenizer, started, split,
                   _Intervals(out, config.report_interval_s or 0.0, telemetry))
        await _make_runner(run, probe_session, telemetry, during)
        outcome = await _drive(run, telemetry, server_watch, telemetry_tail_s, during, signals, restore_cpus)
    summary = _summary(run, outcome, telemetry, server_info)
    # A full disk must not cost the summary: it then goes to a fallback place (summary_path says where).
    write_summary(out, summary, config.summary_file)
    return summary


def _summary(run: _Run, outcome: RunOutcome, telemetry: Telemetry | None,
             server_info: dict[str, Any] | None) -> dict[str, Any]:
    """The summary of the run: build_summary's sections, then what this run adds to them."""
    config, target, runner = run.config, run.target, run.runner
    assert runner is not None
    summary = build_summary(
        target={"url": target.base_url, "model": target.model, "max_model_len": target.max_model_len,
                "auth": auth.current().describe()},
        workload=config.workload.describe(), seed=config.workload.seed,
        levels_requested=[lv.model_dump(exclude_none=True) for lv in config.levels],
        slo=config.slo.model_dump(exclude_none=True) if config.slo else None,
        tokenizer=type(run.tokenizer).__name__ if run.tokenizer else None, started_at=run.started, host=host_info(),
        stats=runner.run_stats.summary(), levels=[_level_entry(lv, telemetry) for lv in outcome.levels],
        telemetry=telemetry, interrupted=outcome.interrupted, abort_reason=outcome.abort_reason,
        run={
            "trace": ({"file": str(config.trace_file), "speed": config.trace_speed, "requests": len(run.trace)}
                      if run.trace else None),
            "sessions": config.sessions.describe() if config.sessions else None,
            # What kind of stop it was: "server" (died, stopped answering) or "output" (disk full).
            "abort_kind": outcome.abort_kind,
            "context_limit": run.limit.describe(),
            # The clock behind every arrival time (TTFT, ITL, e2e): "kernel" receive stamps, or the
            # present clock and why (servesweep.loadgen.http).
            "arrival_clock": runner.arrival_clock,
            "records": {"keep": config.records, "version": 2},
        })
    if config.workers > 1:
        summary["workers"] = check_merge(run.out, config.workers, config.slo)
    if (outcome.interrupted or outcome.abort_reason) and summary["levels"]:
        # The level the stop fell in did not run its course: said, and left out of the repeats' interval.
        summary["levels"][-1]["cut_short"] = outcome.abort_reason or "interrupted"
    _add_repeats(summary, config)
    _add_prefix_cache(summary, config, run.reset_notes)
    _lengths_and_sessions(summary, outcome, run.length_notes, run.limit)
    _add_run_notes(summary, run, server_info)
    _add_output_errors(summary, run, telemetry)
    return summary


def _add_repeats(summary: dict[str, Any], config: LoadTestConfig) -> None:
    summary["repeats"] = config.repeats
    if config.repeats <= 1:
        return
    summary["ci95"] = repeats_ci(summary["levels"])
    if config.target_precision is not None:
        summary["target_precision"] = precision_report(summary["ci95"], config.target_precision,
                                                       max(config.max_repeats, config.repeats))
        for label, got in summary["target_precision"]["levels"].items():
            if not got["reached"]:
                summary["warnings"].append(
                    f"level {label}: output tok/s interval ±{(got['relative_half_width'] or 0):.1%} of the mean "
                    f"after {got['n']} repeats, wider than the {config.target_precision * 100:g}% asked "
                    "(--max-repeats stopped it)")
    summary["ci95_method"] = ("Student-t 95 % interval over the repeats' per-repeat values (the repeats are "
                              "the independent units; requests within one window are not)")


def _add_prefix_cache(summary: dict[str, Any], config: LoadTestConfig, reset_notes: list[str]) -> None:
    prefix, prefix_warnings = prefix_cache_summary(summary["levels"], config.workload.shared_prefix_len,
                                                   config.sessions is not None)
    summary["prefix_cache"] = prefix
    summary["prefix_cache_reset"] = (None if not config.reset_prefix_cache else
                                     {"requested": True, "done": not any("not done" in n for n in reset_notes),
                                      "notes": reset_notes})
    summary["warnings"].extend(prefix_warnings + reset_notes)


def _add_run_notes(summary: dict[str, Any], run: _Run, server_info: dict[str, Any] | None) -> None:
    """Responses held open, the server, the CPU split, the soak's intervals and their verdict."""
    held_open = getattr(run.runner, "held_open_completed", 0)
    if held_open:
        summary["held_open_after_done"] = held_open
        summary["warnings"].append(f"{held_open} responses were held open by the server after 'data: [DONE]'; "
                                   "each was taken as complete at [DONE] and its connection closed")
    if server_info is not None:
        summary["server"] = server_info
    if run.split:
        summary["cpu_split"] = run.split
    if run.config.report_interval_s:
        rows = run.intervals.rows
        summary["soak"] = {"interval_s": run.config.report_interval_s, "intervals": len(rows),
                           "file": soak.INTERVALS_FILE, **soak.drift_verdict(rows)}
        try:
            if soak.plot_intervals(rows, run.out / soak.INTERVALS_PLOT) is not None:
                summary["soak"]["plot"] = soak.INTERVALS_PLOT
        except OSError as exc:
            run.intervals.errors.append(f"cannot write {run.out / soak.INTERVALS_PLOT}: {exc.strerror or exc}")


def _add_output_errors(summary: dict[str, Any], run: _Run, telemetry: Telemetry | None) -> None:
    """Records dropped, and whatever could not be written (records, telemetry, intervals)."""
    writer = run.writer
    dropped = writer.dropped if writer is not None else getattr(run.runner, "records_dropped", 0)
    if dropped:  # the records file lacks them, the statistics do not
        summary["records_dropped"] = dropped
        summary["warnings"].append(describe_dropped(dropped))
    output_error = writer.describe_error() if writer is not None else getattr(run.runner, "write_error", None)
    telemetry_error = getattr(telemetry, "write_error", None)
    errors = [e for e in (output_error, telemetry_error, *run.intervals.errors) if e]
    if errors:
        summary["output_error"] = "; ".join(errors)


def check_workload_lengths(config: LoadTestConfig, limit: ContextLimit, trace: list | None) -> list[str]:
    """Refuse lengths the model's context cannot take (ConfigError, before any load); clip a trace's
    rows in place. Returns the lines saying what will be clipped."""
    notes = []
    if trace is not None:
        _, note = clip_trace(trace, limit, str(config.trace_file))
        notes.append(note)
    elif config.sessions is not None:
        spec = config.sessions
        notes.append(check_sessions(spec.turns, spec.user_len, spec.output_len, limit).note)
    elif config.workload.dataset is None:
        w = config.workload
        notes.append(check_lengths(w.input_len, w.output_len, limit, w.shared_prefix_len).note)
    else:
        w = config.workload
        if w.output_len.kind == "fixed" and w.output_len.a >= limit.tokens:
            raise ConfigError(f"--output-len {w.output_len} leaves no room for a prompt in the model's context of "
                              f"{limit.tokens:,} tokens ({limit.source})")
    return [n for n in notes if n]


def _lengths_and_sessions(summary: dict[str, Any], outcome: Any, notes: list[str], limit: ContextLimit) -> None:
    """Say what was clipped to fit the model's context, and which session turns were never sent."""
    clipped = sum(lv.prompts_clipped for lv in outcome.levels)
    built = sum(lv.prompts_built for lv in outcome.levels)
    sessions = [lv.sessions for lv in outcome.levels if lv.sessions]
    for lv, entry in zip(outcome.levels, summary["levels"]):
        if lv.prompts_clipped:
            entry["lengths_clipped"] = lv.prompts_clipped
        if lv.sessions:
            entry["sessions_outcome"] = lv.sessions
    summary["lengths_clipped"] = ({"prompts": clipped, "of": built, "limit": limit.describe(), "notes": notes}
                                  if clipped or notes else None)
    if notes and not sessions:
        what = "session turns" if summary.get("sessions") else "prompts"
        summary["warnings"].extend(notes if not clipped else [f"{notes[0]}: {clipped} of {built} {what} clipped"]
                                   + notes[1:])
    if sessions:
        totals = {k: sum(s[k] for s in sessions) for k in ("planned_turns", "sent_turns", "skipped_turns",
                                                           "clipped_turns", "sessions_ended_early")}
        totals["stopped"] = any(s["stopped"] for s in sessions)
        summary["sessions_outcome"] = totals
        never = totals["planned_turns"] - totals["sent_turns"]
        if never:
            why = []
            if totals["sessions_ended_early"]:
                why.append(f"{totals['sessions_ended_early']} session(s) ended at a failed turn")
            if totals["stopped"]:
                why.append("the run stopped before the rest")
            if totals["clipped_turns"]:
                why.append(f"{totals['clipped_turns']} turn(s) would not fit the model's context of "
                           f"{limit.tokens:,} tokens ({limit.source})")
            summary["warnings"].append(f"{never} of {totals['planned_turns']} planned session turns were never sent: "
                                       + "; ".join(why))


def _pin_client(cpus: list[int]) -> set[int] | None:
    """Run the load generator on the cores the launched CPU server leaves free; returns the
    affinity to restore afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    return before


async def _watch_server(watch: ServerWatch, runner: LoadRunner | WorkerPool) -> None:
    while not runner.stopped:
        reason = watch.poll_failure()
        if reason:
            runner.stop(reason)
            return
        await asyncio.sleep(0.5)
