"""Drive load levels against one target and keep every record on disk as it completes.

One keep-alive connection pool (servesweep.loadgen.http) serves the whole run; it grows to the
largest number of requests in flight. Prompts are built before a level starts so the timed loop
does nothing but send, read and record.

A level runs in two phases:
1. Warm-up (when `warmup_requests` > 0): that many requests at the level's concurrency (at most
   that many in flight) or arrival rate, then a wait until every one of them has finished. Their
   records are written with `warmup=True` and left out of the statistics.
2. The measured window, which opens only then, so warm-up requests never share the server's
   slots with measured ones. With several workers, every worker finishes its warm-up before the
   shared start instant. The level's `start_s` is the window's opening; a duration-bounded level
   (`duration_s`) counts its duration from there, sends nothing after it and lets what is in flight
   finish. Throughput and goodput (servesweep.loadgen.stats) divide by the span from the first
   measured request's send to the last measured request's completion.

Memory: a completed record is written, added to the level's `RunStats` (and the current interval's,
with `interval_s`) and released, so the client's memory does not grow with the run's length.
`keep_records=True` keeps them in `LevelResult.records` (the gate under load needs its few).
With `interval_s`, `on_interval(level, index, start_s, end_s, stats)` hears of each interval of the
measured window as it ends (the last one may be shorter): a soak's trend, written as the run goes.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import signal
import sys
import time
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from servesweep import controlplane
from servesweep.controlplane import NO_REDIRECTS, auth_error, is_auth_failure
from servesweep.errors import ConfigError, TargetError
from servesweep.loadgen.arrivals import LoadLevel, arrival_offsets
from servesweep.loadgen.client import build_payload, stream_options, endpoint_path, is_disconnect, send_request
from servesweep.loadgen.http import HttpPool
from servesweep.loadgen.pacer import TurnPacer
from servesweep.loadgen.records import (
    ERROR_CANCELLED,
    ERROR_CONNECTION,
    ERROR_TIMEOUT,
    RecordWriter,
    RequestRecord,
)
from servesweep.loadgen.stats import SLO, RunStats
from servesweep.loadgen.tokenizer import TokenizerLike
from servesweep.loadgen.sessions import SessionPlan, SessionSpec, SessionsResult, plan_sessions, run_sessions
from servesweep.loadgen.traces import TraceRequest, trace_prompts
from servesweep.loadgen.workload import PromptItem, Workload, build_prompts

# Prompts are built before a level starts; a level of more requests than this reuses them
# (flagged as `prompt_pool_wrapped` in the summary, since reuse lets prefix caching help).
MAX_PROMPT_POOL = 4096


# Why a run stopped before its end, beside `abort_reason` (the CLI's exit code follows it).
ABORT_SERVER = "server"  # the server died, stopped answering, or its tokenizer went away: exit 3
ABORT_OUTPUT = "output"  # records could not be written (disk full): exit 5
ABORT_AUTH = "auth"  # the server refused the credentials (HTTP 401/403): exit 2

# The watchdog (LoadRunner._watch): how often it looks, how long every stream in flight may go
# without a byte before the server is asked whether it is alive, how long that question may take,
# and how long after `data: [DONE]` a server may hold a response open before it is complete.
WATCH_INTERVAL_S = 0.5
QUIET_PROBE_S = 10.0
PROBE_TIMEOUT_S = 5.0
HELD_OPEN_S = 1.0


@dataclass
class LevelResult:
    level: LoadLevel
    start_s: float
    end_s: float
    records: list[RequestRecord]  # empty unless the runner was asked to keep them
    summary: dict
    prompt_pool_wrapped: bool = False
    stats: RunStats | None = None  # kept where asked (workers ship it to the parent)
    prompts_clipped: int = 0  # prompts built with lengths cut to the model's context (loadgen.fit)
    prompts_built: int = 0
    sessions: dict | None = None  # multi-turn sessions: planned, sent, skipped, clipped turns (SessionsResult)


# Called at the end of each interval of a level's measured window: level, interval number (from 0),
# start and end (seconds since t0), the statistics of the requests that completed in it, and how
# many requests were in flight at its end (a server that froze: none completed, several in flight).
IntervalCallback = Callable[[LoadLevel, int, float, float, RunStats, int], None]


class _LevelSink:
    """Where a level's completed records go: its statistics, the current interval's, and the list
    only when records are kept. Offers `append`, as the list it replaces did."""

    __slots__ = ("stats", "interval", "records")

    def __init__(self, slo: SLO | None, keep_records: bool) -> None:
        self.stats = RunStats(slo)
        self.interval: RunStats | None = None
        self.records: list[RequestRecord] | None = [] if keep_records else None

    def append(self, record: RequestRecord) -> None:
        self.stats.add(record)
        if self.interval is not None:
            self.interval.add(record)
        if self.records is not None:
            self.records.append(record)


@dataclass
class RunOutcome:
    levels: list[LevelResult] = field(default_factory=list)
    interrupted: bool = False
    abort_reason: str | None = None
    abort_kind: str | None = None  # ABORT_SERVER | ABORT_OUTPUT (None when interrupted or whole)


@asynccontextmanager
async def stop_on_signals(callback: Callable[[], None]) -> AsyncIterator[None]:
    """SIGINT and SIGTERM call `callback` (a graceful stop) instead of killing the process."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@dataclass(slots=True)
class RunnerOptions:
    """How a LoadRunner runs, beside what it runs (target, workload, levels, writer, tokenizer).

    `t0`, `id_start`/`id_step` and `arrival_phase` (a fraction of the mean arrival gap) let several
    runner processes share one clock, distinct request ids and staggered arrivals.

    `trace`: the requests a level with arrival "trace" replays, at their offsets and lengths.
    `sessions`: the conversations a level with arrival "sessions" runs (multi-turn chat).

    The run stops itself ("server stopped answering") after `consecutive_failure_limit` requests
    in a row that failed to connect or timed out, or `consecutive_timeout_limit` in a row that
    timed out: a frozen server would otherwise hold the run for requests / concurrency x the
    request timeout. Any other completed request, even a failed one, resets both counts.

    Those counts alone miss a server that dies with fewer requests left, and take minutes on a
    frozen one; a watchdog (`_watch`) also asks the server whether it is alive (GET /v1/models
    within `probe_timeout_s`) after any request that could not connect, was cut off or timed
    out, at the end of every level that had one, and when no stream in flight has received a
    byte for `quiet_probe_s`. A server that does not answer ends the run. The watchdog also
    completes a response the server holds open `held_open_s` after its `data: [DONE]`. Left
    None, those three take the module's constants as they are when the runner is made.

    `context_limit`: the model's context in tokens; prompts are built to fit it (loadgen.fit)."""

    slo: SLO | None = None
    keep_text: bool = False
    show_progress: bool | None = None  # None: when stderr is a terminal
    consecutive_failure_limit: int = 32
    consecutive_timeout_limit: int = 3
    t0: float | None = None
    id_start: int = 0
    id_step: int = 1
    arrival_phase: float = 0.0
    trace: list[TraceRequest] | None = None
    sessions: SessionSpec | None = None
    keep_records: bool = False
    keep_level_stats: bool = False
    interval_s: float | None = None
    on_interval: IntervalCallback | None = None
    context_limit: int | None = None
    quiet_probe_s: float | None = None
    probe_timeout_s: float | None = None
    held_open_s: float | None = None


@dataclass(slots=True)
class RunnerHooks:
    """What the runner's owner runs at a level's edges; each is optional."""

    # Awaited once a level's prompts are built; may return the perf_counter instant the level
    # starts at (workers of one pool share it, so their arrival schedules interleave exactly).
    before_level: Callable[[LoadLevel], Awaitable[float | None]] | None = None
    # Awaited when a level's last request has completed, before the next level is prepared.
    after_level: Callable[[LoadLevel], Awaitable[None]] | None = None
    # Awaited at a level's very start, before its warm-up (e.g. clearing the server's prefix cache).
    level_prelude: Callable[[LoadLevel], Awaitable[None]] | None = None
    # Called after each level with it, the levels so far and those still planned: levels to run
    # next (servesweep.confidence's target precision adds repeats this way).
    more_levels: Callable[[LevelResult, list[LevelResult], list[LoadLevel]], list[LoadLevel]] | None = None


class LoadRunner:
    def __init__(self, base_url: str, model: str, workload: Workload, levels: list[LoadLevel],
                 writer: RecordWriter, tokenizer: TokenizerLike | None, options: RunnerOptions | None = None,
                 hooks: RunnerHooks | None = None) -> None:
        self.options = opts = options or RunnerOptions()
        self.hooks = hooks or RunnerHooks()
        self.base_url = base_url
        self.url = base_url.rstrip("/") + endpoint_path(workload)
        self.path = urlsplit(self.url).path
        self.model = model
        self.workload = workload
        self.levels = levels
        self.writer = writer
        self.tokenizer = tokenizer
        self.show_progress = sys.stderr.isatty() if opts.show_progress is None else opts.show_progress
        self.rng = np.random.default_rng(workload.seed)
        self.t0 = time.perf_counter() if opts.t0 is None else opts.t0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._consecutive_no_answer = 0  # connection failures and timeouts
        self._consecutive_timeouts = 0
        # Records the disk cannot take stop the run (the writer keeps the error; see RecordWriter).
        writer.on_error = self._on_write_error
        self.outcome = RunOutcome()
        self._next_id = opts.id_start
        # The whole run's statistics: each level's are merged in when it ends.
        self.run_stats = RunStats(opts.slo)
        # Which clock stamped response arrivals (HttpPool.clock_source), known once `run` returns.
        self.arrival_clock: str | None = None
        self.quiet_probe_s = QUIET_PROBE_S if opts.quiet_probe_s is None else opts.quiet_probe_s
        self.probe_timeout_s = PROBE_TIMEOUT_S if opts.probe_timeout_s is None else opts.probe_timeout_s
        self.held_open_s = HELD_OPEN_S if opts.held_open_s is None else opts.held_open_s
        self._suspect: str | None = None  # the last failure that may mean the server is gone, not yet checked
        self._probe_lock = asyncio.Lock()
        self._last_answer = 0.0  # perf_counter: the last request completion or successful probe
        self.held_open_completed = 0  # responses completed at [DONE] while the server held them open
        self._pool: HttpPool | None = None  # the run's connections, once `run` has made them
        # Recording a completed request and starting the next take turns, so that a wave of requests
        # finishing together does not hold the loop while other streams' chunks wait unread.
        self._pacer = TurnPacer()

    # --- stopping ---------------------------------------------------------------------------
    def stop(self, reason: str | None = None, kind: str | None = ABORT_SERVER) -> None:
        """Stop sending and cancel what is in flight. Completed records are already on disk."""
        if reason and self.outcome.abort_reason is None:
            self.outcome.abort_reason = reason
            self.outcome.abort_kind = kind
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()

    def _on_signal(self) -> None:
        self.outcome.interrupted = True
        self.stop("interrupted by signal", kind=None)

    def _on_write_error(self, exc: OSError) -> None:
        self.stop(self.writer.describe_error() or f"cannot write records: {exc}", kind=ABORT_OUTPUT)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # --- one request --------------------------------------------------------------------------
    def _new_record(self, level: LoadLevel, item: PromptItem, index: int, scheduled_s: float) -> RequestRecord:
        rid = self._next_id
        self._next_id += self.options.id_step
        return RequestRecord(
            request_id=rid,
            level=level.label,
            warmup=index < level.warmup_requests,
            scheduled_s=scheduled_s,
            prompt_len_requested=item.prompt_len,
            output_len_requested=item.output_len,
        )

    async def _one(self, pool: HttpPool, record: RequestRecord, payload: dict,
                   done: _LevelSink, progress: Callable[[], None], path: str | None = None,
                   keep_text: bool | None = None) -> None:
        try:
            await send_request(pool, path or self.path, payload, record, self.t0,
                               self.options.keep_text if keep_text is None else keep_text)
            # Its times are taken: the rest (recording it; in a closed loop, sending the next) waits
            # its turn (servesweep.loadgen.pacer).
            await self._pacer.turn()
        finally:
            self.writer.write(record)
            done.append(record)
            progress()
        kind = record.error_kind
        if kind is None:
            self._last_answer = time.perf_counter()
        elif kind != ERROR_CANCELLED and (kind == ERROR_CONNECTION or kind == ERROR_TIMEOUT
                                          or is_disconnect(record)):
            self._suspect = f"{kind}: {record.error_message}"  # the watchdog asks the server
        if kind == ERROR_CONNECTION or kind == ERROR_TIMEOUT:
            self._consecutive_no_answer += 1
            if kind == ERROR_TIMEOUT:
                self._consecutive_timeouts += 1
            n, timeouts = self._consecutive_no_answer, self._consecutive_timeouts
            if timeouts >= self.options.consecutive_timeout_limit:
                self.stop(f"server stopped answering: {timeouts} requests in a row timed out "
                          f"(last: {record.error_message})")
            elif n >= self.options.consecutive_failure_limit:
                what = "failed to connect" if timeouts == 0 else "failed to connect or timed out"
                self.stop(f"server stopped answering: {n} requests in a row {what} "
                          f"(last: {record.error_message})")
        elif kind != ERROR_CANCELLED:
            self._consecutive_no_answer = self._consecutive_timeouts = 0
            if kind is not None and is_auth_failure(record.http_status or 0):
                # Every request would be refused the same way: an authentication failure, not a load result.
                self.stop(str(auth_error(self.url, record.http_status or 0)), kind=ABORT_AUTH)

    # --- is the server still there? -------------------------------------------------------------
    async def _probe(self, session: aiohttp.ClientSession) -> str | None:
        """None when the server answers its model list (any HTTP status) within the probe's
        timeout; otherwise why not, naming the URL."""
        url = self.base_url.rstrip("/") + "/v1/models"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.probe_timeout_s),
                                   **NO_REDIRECTS) as resp:
                await resp.read()
        except (TimeoutError, asyncio.TimeoutError):
            return f"{url} did not answer within {self.probe_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return f"{url} cannot be reached ({exc})"
        self._last_answer = time.perf_counter()
        return None

    async def _check_suspect(self, session: aiohttp.ClientSession) -> None:
        """A request failed in a way a dead server causes: ask the server; stop the run if it is gone."""
        async with self._probe_lock:
            suspect, self._suspect = self._suspect, None
            if suspect is None or self.stopped:
                return
            reason = await self._probe(session)
        if reason is not None:
            self.stop(f"server stopped answering: {reason}; last failed request: {suspect}")

    async def _watch(self, pool: HttpPool, session: aiohttp.ClientSession) -> None:
        """Every WATCH_INTERVAL_S: complete responses held open past their [DONE], check a failure
        that may mean the server died, and ask a server whose streams have all gone quiet."""
        while not self.stopped:
            await asyncio.sleep(min(WATCH_INTERVAL_S, self.quiet_probe_s, self.held_open_s,
                                    self.workload.stall_timeout_s / 4))
            self.held_open_completed += pool.finish_held_open(self.held_open_s)
            pool.expire_stalled(self.workload.stall_timeout_s)
            if self._suspect is not None:
                await self._check_suspect(session)
                continue
            in_flight, latest = pool.activity()
            now = time.perf_counter()
            quiet = now - max(latest, self._last_answer)
            if in_flight and quiet >= self.quiet_probe_s:
                async with self._probe_lock:
                    reason = await self._probe(session)
                if reason is not None and not self.stopped:
                    self.stop(f"server stopped answering: none of the {in_flight} requests in flight received a "
                              f"byte for {quiet:.0f} s, and {reason}")

    # --- levels -------------------------------------------------------------------------------
    def _planned_count(self, level: LoadLevel) -> int:
        if level.num_requests is not None:
            return min(level.num_requests + level.warmup_requests, MAX_PROMPT_POOL)
        assert level.duration_s is not None
        if level.request_rate is not None:
            estimate = level.request_rate * level.duration_s * 1.5 + 16
        else:
            estimate = level.concurrency * 32  # type: ignore[operator]
        return int(min(max(estimate, 1) + level.warmup_requests, MAX_PROMPT_POOL))

    async def _run_closed(self, pool: HttpPool, level, prompts, done, progress, first: int,
                          stop_at: int | None, deadline: float | None, users: int) -> bool:
        """`users` closed-loop users send requests number `first`, `first + 1`, ... until `stop_at`
        (exclusive) or `deadline` (perf_counter; what is in flight then completes)."""
        counter = itertools.count(first)
        wrapped = False
        if stop_at is not None:
            users = max(min(users, stop_at - first), 0)  # a user with no request to send is not started

        async def user() -> None:
            nonlocal wrapped
            await self._pacer.turn()  # a thousand users starting at once take turns too
            while not self.stopped:
                i = next(counter)
                if stop_at is not None and i >= stop_at:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if i >= len(prompts):
                    wrapped = True
                item = prompts[i % len(prompts)]
                now = time.perf_counter() - self.t0
                record = self._new_record(level, item, i, now)
                await self._one(pool, record, build_payload(self.model, item, self.workload), done, progress)

        tasks = [asyncio.create_task(user()) for _ in range(users)]
        self._tasks.update(tasks)
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
        _raise_first_error(results)
        return wrapped

    async def _warm_up(self, pool: HttpPool, level: LoadLevel, prompts, done, progress) -> bool:
        """The level's warm-up phase: its `warmup_requests` requests (numbers 0 .. n-1, flagged
        `warmup`) at the level's concurrency or arrival rate, every one finished before the
        measured window opens."""
        n = level.warmup_requests
        if level.concurrency is not None:
            return await self._run_closed(pool, level, prompts, done, progress, 0, n, None,
                                          min(level.concurrency, n))
        return await self._run_open(pool, level, prompts, done, progress, time.perf_counter(), 0, n, None)

    async def _run_open(self, pool: HttpPool, level, prompts, done, progress, start: float, first: int,
                        count: int | None, deadline: float | None) -> bool:
        """Requests number `first`, `first + 1`, ... on the level's arrival schedule from `start`
        (perf_counter): `count` of them, or until `deadline` when `count` is None; then waits for
        every one in flight."""
        if level.arrival == "trace":
            assert self.options.trace is not None
            offsets = np.array([r.offset_s for r in self.options.trace[first:first + (count or len(self.options.trace))]])
            offsets = offsets - (offsets[0] if first and len(offsets) else 0.0)
        else:
            offsets = arrival_offsets(level, count if count is not None else MAX_PROMPT_POOL * 16, self.rng)
        if self.options.arrival_phase:
            offsets = offsets + self.options.arrival_phase / level.request_rate
        limit = level.in_flight_limit
        gate = asyncio.Semaphore(limit) if limit else None
        wrapped = False

        async def gated(record: RequestRecord, payload: dict) -> None:
            async with gate if gate is not None else nullcontext():
                await self._one(pool, record, payload, done, progress)

        for i, offset in enumerate(offsets.tolist(), start=first):
            target = start + offset
            if deadline is not None and target >= deadline:
                break
            delay = target - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
            if self.stopped:
                break
            if i >= len(prompts):
                wrapped = True
            item = prompts[i % len(prompts)]
            record = self._new_record(level, item, i, target - self.t0)
            task = asyncio.create_task(gated(record, build_payload(self.model, item, self.workload)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pending = [t for t in self._tasks]
        if pending:
            _raise_first_error(await asyncio.gather(*pending, return_exceptions=True))
        return wrapped

    async def _run_sessions(self, pool: HttpPool, level: LoadLevel, plans: list[SessionPlan], done, progress,
                            level_start: float) -> SessionsResult:
        """Every conversation at once: each turn's prompt is the history so far plus a new user
        message, sent when the previous answer has arrived and the think time has passed."""
        stop = asyncio.Event()
        path = urlsplit(self.base_url.rstrip("/") + "/v1/chat/completions").path
        workload = self.workload

        async def send(messages: list[dict[str, str]], output_len: int, session_id: int, turn: int) -> RequestRecord:
            item = PromptItem("", None, output_len)
            record = self._new_record(level, item, 0, time.perf_counter() - self.t0)
            record.warmup, record.session_id, record.turn = False, session_id, turn
            payload = {"model": self.model, "messages": messages, "max_tokens": output_len, "stream": workload.stream}
            if workload.ignore_eos:
                payload["ignore_eos"] = True
            if workload.stream:
                payload["stream_options"] = stream_options(workload)
            # The answer is the next turn's history, so its text is kept whatever --keep-text says.
            await self._one(pool, record, payload, done, progress, path=path, keep_text=True)
            return record

        async def watch() -> None:
            await self._stop.wait()
            stop.set()

        watcher = asyncio.create_task(watch())
        try:
            return await run_sessions(plans, send, stop=stop)
        finally:
            watcher.cancel()

    async def _build_prompts(self, level: LoadLevel) -> list[Any] | None:
        """The level's prompts, built in a task `stop()` cancels (a /tokenize that hangs must not
        hold Ctrl-C). None when the run was stopped meanwhile, or when the server's tokenizer
        failed: the run then stops with the reason, and what completed is kept."""
        if level.arrival == "trace":
            assert self.options.trace is not None
            build = trace_prompts(self.options.trace, self.tokenizer, self.workload.seed, self.workload.endpoint)
        elif level.arrival == "sessions":
            assert self.options.sessions is not None
            if self.tokenizer is None:
                raise ConfigError("multi-turn sessions need a tokenizer: give --tokenizer DIR or a server "
                                  "with /tokenize")
            build = plan_sessions(self.options.sessions, self.tokenizer, limit=self.options.context_limit)
        else:
            build = build_prompts(self.workload, self._planned_count(level), self.tokenizer, self.rng,
                                  limit=self.options.context_limit)
        task = asyncio.ensure_future(build)
        self._tasks.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self.stopped and (current is None or not current.cancelling()):
                return None
            raise
        except TargetError as exc:
            self.stop(f"cannot build the prompts of level {level.label}: {exc}")
            return None
        finally:
            self._tasks.discard(task)

    async def _run_level(self, pool: HttpPool, level: LoadLevel, progress_bar,
                         session: aiohttp.ClientSession | None = None) -> LevelResult | None:
        prompts = await self._build_prompts(level)
        if prompts is None or self.stopped:
            return None
        done = _LevelSink(self.options.slo, self.options.keep_records)
        task_id = None
        if progress_bar is not None:
            task_id = progress_bar.add_task(
                f"level {level.label}",
                total=(level.num_requests + level.warmup_requests) if level.num_requests else None,
            )

        def advance() -> None:
            if task_id is not None:
                progress_bar.advance(task_id)

        if level.in_flight_limit:
            # Connect before the clock starts: a thousand connects at once would hold the event loop
            # while the first streams' chunks wait to be read.
            await pool.warm(_most_in_flight(level))
        # A full garbage collection walks every live object: with the prompts, the tokenizer and the
        # records alive it stopped the event loop for ~20 ms mid-level, and that landed on the TTFT of
        # the streams whose chunks were waiting (p99 TTFT error at 1,000 streams: 20 ms -> 0.4 ms
        # with this). Objects alive when the level starts are frozen (skipped by the collector);
        # young cyclic garbage is still collected.
        gc.collect()
        gc.freeze()
        ticker: asyncio.Task | None = None
        if self.hooks.level_prelude is not None:
            await self.hooks.level_prelude(level)
        try:
            warmups = level.warmup_requests
            wrapped = False
            if warmups and not self.stopped:
                wrapped = await self._warm_up(pool, level, prompts, done, advance)
            level_start = await self.hooks.before_level(level) if self.hooks.before_level is not None else None
            if level_start is None:
                level_start = time.perf_counter()
            start = level_start - self.t0
            stop_at = warmups + level.num_requests if level.num_requests is not None else None
            deadline = level_start + level.duration_s if level.duration_s is not None else None
            sessions = None
            ticker = self._start_intervals(level, done, level_start)
            if level.arrival == "sessions":
                sessions = (await self._run_sessions(pool, level, prompts, done, advance, level_start)).describe()
            elif level.concurrency is not None:
                wrapped |= await self._run_closed(pool, level, prompts, done, advance, warmups, stop_at,
                                                  deadline, level.concurrency)
            else:
                wrapped |= await self._run_open(pool, level, prompts, done, advance, level_start, warmups,
                                                level.num_requests, deadline)
            end = time.perf_counter() - self.t0
            if ticker is not None:
                ticker.cancel()
                self._end_interval(level, done, end, last=True)
        finally:
            if ticker is not None:
                ticker.cancel()
            gc.unfreeze()
        if self._suspect is not None and session is not None:
            # The level's last requests failed the way a dead server fails them: ask now, whatever
            # the number of requests left (there may be none), so the run says so.
            await self._check_suspect(session)
        if self.hooks.after_level is not None:
            await self.hooks.after_level(level)
        if task_id is not None:
            progress_bar.update(task_id, visible=False)
        records = sorted(done.records, key=lambda r: r.request_id) if done.records is not None else []
        self.run_stats.merge(done.stats)
        clipped = (sum(p.clipped_turns for p in prompts) if level.arrival == "sessions"
                   else sum(1 for p in prompts if getattr(p, "clipped", False)))
        return LevelResult(level, start, end, records, done.stats.summary(), wrapped,
                           done.stats if self.options.keep_level_stats else None,
                           prompts_clipped=clipped, prompts_built=len(prompts), sessions=sessions)

    # --- per-interval statistics (soak runs) ---------------------------------------------------
    def _start_intervals(self, level: LoadLevel, sink: _LevelSink, level_start: float) -> asyncio.Task | None:
        if not self.options.interval_s or self.options.on_interval is None:
            return None
        sink.interval = RunStats(self.options.slo)
        self._interval_index, self._interval_start = 0, level_start - self.t0

        async def tick() -> None:
            while True:
                boundary = self.t0 + self._interval_start + self.options.interval_s
                await asyncio.sleep(max(boundary - time.perf_counter(), 0.0))
                self._end_interval(level, sink, boundary - self.t0)
                sink.interval = RunStats(self.options.slo)

        return asyncio.create_task(tick())

    def _end_interval(self, level: LoadLevel, sink: _LevelSink, end: float, last: bool = False) -> None:
        stats, start = sink.interval, self._interval_start
        if stats is None or end <= start:
            return
        sink.interval = None
        # Every interval is reported, those in which nothing completed above all (a server that froze);
        # only a level's last one may be left out when empty: it ends right on a boundary.
        if stats.total or not last:
            assert self.options.on_interval is not None
            in_flight = self._pool.activity()[0] if self._pool is not None else 0
            self.options.on_interval(level, self._interval_index, start, end, stats, in_flight)
        self._interval_index += 1
        self._interval_start = end

    async def run(self) -> RunOutcome:
        progress_bar = _make_progress() if self.show_progress else None
        pool = self._pool = HttpPool(self.base_url, timeout_s=self.workload.request_timeout_s)
        async with stop_on_signals(self._on_signal), pool, controlplane.session() as session:
            watchdog = asyncio.create_task(self._watch(pool, session))
            try:
                with progress_bar if progress_bar is not None else nullcontext():
                    levels, i = list(self.levels), 0
                    while i < len(levels):
                        if self.stopped:
                            break
                        result = await self._run_level(pool, levels[i], progress_bar, session)
                        if result is None:
                            break
                        self.outcome.levels.append(result)
                        if self.hooks.more_levels is not None:
                            # e.g. another repeat while a level's interval is wider than asked
                            levels[i + 1:i + 1] = self.hooks.more_levels(result, self.outcome.levels, levels[i + 1:])
                        i += 1
            finally:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            self.arrival_clock = pool.clock_source
        return self.outcome


def _most_in_flight(level: LoadLevel) -> int:
    """The most requests a level can have in flight: its cap, or fewer when it sends fewer requests."""
    limit = level.in_flight_limit or 0
    if level.num_requests is not None:
        return min(limit, level.num_requests + level.warmup_requests)
    return limit


def _raise_first_error(results: list) -> None:
    """Re-raise what a request task raised (a bug: send_request records every response failure),
    so it surfaces instead of silently ending a closed-loop user."""
    for result in results:
        if isinstance(result, Exception):
            raise result


def _make_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(  # level names come from files: never read as rich markup
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True, refresh_per_second=4,
    )


def run_async(coro):
    """Run a coroutine on uvloop where it is installed: less client overhead per chunk."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
