"""Scale the load generator out over several processes on one machine (`--workers N`).

One Python process parses roughly 450k streamed chunks per second on one core; past that, or
when timing precision matters at thousands of streams, the load is split over N processes:
each worker runs its own `LoadRunner` with its share of every level and writes its own
`records.worker-K.jsonl`; the parent merges them into `records.jsonl` (a streaming merge by
request id: no file is held in memory) and checks that it is exactly the union of the workers'
files. Each worker sends its per-level statistics (servesweep.loadgen.stats.RunStats, bounded in
size) with its report; the parent merges those into the summary, so neither side keeps records.

Timestamps stay comparable across workers: every worker measures from the parent's `t0` on
`time.perf_counter`, which on Linux is CLOCK_MONOTONIC, one clock for every process.
Levels stay in step: workers build their prompts, wait at a barrier, then start the level at
one shared instant, so open-loop arrivals interleave as planned.
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing as mp
from array import array
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from itertools import zip_longest

from servesweep import auth, controlplane
from servesweep.errors import ConfigError, OutputError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import RECORDS_FULL, RECORDS_NONE, RecordWriter, RequestRecord, read_records
from servesweep.loadgen.load_runner import LevelResult, RunOutcome, stop_on_signals
from servesweep.loadgen.stats import SLO, RunStats, summarize
from servesweep.loadgen.workload import Workload


class WorkerSplitError(ConfigError):
    """The load cannot be split over that many workers."""


def _shares(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def split_level(level: LoadLevel, n: int) -> list[LoadLevel]:
    """Each worker's share of a level: concurrency, rate, request counts and in-flight caps divided
    as evenly as integers allow. Every worker gets a non-empty share, or this raises."""
    if level.concurrency is not None and level.concurrency < n:
        raise WorkerSplitError(f"level {level.label}: concurrency {level.concurrency} < {n} workers")
    if level.num_requests is not None and level.num_requests < n:
        raise WorkerSplitError(f"level {level.label}: {level.num_requests} requests < {n} workers")
    requests = _shares(level.num_requests, n) if level.num_requests is not None else [None] * n
    warmups = _shares(level.warmup_requests, n)
    users = _shares(level.concurrency, n) if level.concurrency is not None else None
    caps = _shares(level.max_concurrency, n) if level.max_concurrency is not None else None
    out = []
    for i in range(n):
        update: dict[str, Any] = {"num_requests": requests[i], "warmup_requests": warmups[i], "name": level.label}
        if users is not None:
            update["concurrency"] = users[i]
        else:
            update["request_rate"] = level.request_rate / n
            if caps is not None:
                update["max_concurrency"] = max(1, caps[i])
        out.append(LoadLevel.model_validate(level.model_dump() | update))
    return out


@dataclass(frozen=True)
class WorkerJob:
    index: int
    count: int
    base_url: str
    model: str
    workload: dict[str, Any]
    levels: list[dict[str, Any]]  # this worker's shares, one per level
    tokenizer: str | None  # a model directory, "server" for the server's /tokenize, or None
    records_path: str
    t0: float
    keep_text: bool
    records: str = RECORDS_FULL
    slo: dict[str, Any] | None = None
    context_limit: int | None = None  # the model's context: prompts are built to fit it (loadgen.fit)
    auth_headers: tuple[tuple[str, str], ...] = ()  # the parent's credentials (servesweep.auth)


def worker_records_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"records.worker-{index}.jsonl"


# How far ahead of the barrier's release a level starts: time for every worker to wake up.
LEVEL_START_LEAD_S = 0.02


class _SetLevelStart:
    """Barrier action (runs once per level, in the last worker to arrive): the shared start instant."""

    def __init__(self, level_start) -> None:
        self.level_start = level_start

    def __call__(self) -> None:
        self.level_start.value = time.perf_counter() + LEVEL_START_LEAD_S


def _worker_main(job: WorkerJob, barrier, level_start, stop_event, results) -> None:
    """Entry point of a worker process."""
    from servesweep.loadgen.load_runner import LoadRunner, RunnerHooks, RunnerOptions, run_async

    auth.use(auth.ServerAuth(job.auth_headers))  # before any session or pool is made

    async def main() -> dict[str, Any]:
        from servesweep.loadgen.tokenizer import control_timeout, open_tokenizer

        workload = Workload.model_validate(job.workload)
        levels = [LoadLevel.model_validate(lv) for lv in job.levels]
        async with controlplane.session() as side_session:
            tokenizer = open_tokenizer(job.tokenizer, side_session, job.base_url, job.model,
                                       timeout_s=control_timeout(workload.request_timeout_s))
            writer = RecordWriter(Path(job.records_path), keep=job.records, background=True)
            loop = asyncio.get_running_loop()

            async def in_step(level: LoadLevel) -> float:
                await loop.run_in_executor(None, barrier.wait)
                start = level_start.value
                # Event-loop timers fire to the millisecond, early as well as late: sleep to just
                # before the instant, then spin to it, so no request goes out before its level starts.
                await asyncio.sleep(max(start - time.perf_counter() - 0.002, 0.0))
                while time.perf_counter() < start:
                    pass
                return start

            runner = LoadRunner(job.base_url, job.model, workload, levels, writer, tokenizer, RunnerOptions(
                slo=SLO.model_validate(job.slo) if job.slo else None, keep_text=job.keep_text, show_progress=False,
                t0=job.t0, id_start=job.index, id_step=job.count, arrival_phase=job.index / job.count,
                keep_level_stats=True, context_limit=job.context_limit), RunnerHooks(before_level=in_step))

            async def watch_stop() -> None:
                while not runner.stopped:
                    if stop_event.is_set():
                        runner.stop("stopped by the parent process")
                        return
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch_stop())
            try:
                outcome = await runner.run()
            finally:
                watcher.cancel()
                writer.close()
            if outcome.abort_reason and not stop_event.is_set():
                # It stopped on its own (tokenizer gone, disk full): siblings must not wait for it
                # at the next level's barrier.
                barrier.abort()
        return {"index": job.index, "interrupted": outcome.interrupted, "abort_reason": outcome.abort_reason,
                "abort_kind": outcome.abort_kind, "arrival_clock": runner.arrival_clock,
                "records_dropped": writer.dropped,
                "clipped": [(lv.prompts_clipped, lv.prompts_built) for lv in outcome.levels],
                "levels": [{"label": lv.level.label, "start_s": lv.start_s, "end_s": lv.end_s,
                            "wrapped": lv.prompt_pool_wrapped, "stats": lv.stats} for lv in outcome.levels]}

    try:
        results.put(run_async(main()))
    except BaseException as exc:  # noqa: BLE001 - the parent must hear about any failure
        barrier.abort()
        results.put({"index": job.index, "error": f"{type(exc).__name__}: {exc}"})


class WorkerPool:
    """Runs the levels in N processes; offers LoadRunner's `run` / `stop` / `stopped` / `t0`."""

    def __init__(self, count: int, base_url: str, model: str, workload: Workload, levels: list[LoadLevel],
                 out_dir: Path, tokenizer: str | None, slo: SLO | None, keep_text: bool,
                 records: str = RECORDS_FULL, context_limit: int | None = None) -> None:
        self.count = count
        self.levels = levels
        self.shares = [split_level(level, count) for level in levels]  # raises WorkerSplitError early
        self.out_dir = out_dir
        self.slo = slo
        self.records = records
        self.t0 = time.perf_counter()
        self.run_stats = RunStats(slo)  # the whole run's, merged from the workers' levels
        ctx = mp.get_context("spawn")
        self._level_start = ctx.Value("d", 0.0)
        self._barrier = ctx.Barrier(count, action=_SetLevelStart(self._level_start))
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._reason: str | None = None
        self._interrupted = False
        self.arrival_clock: str | None = None  # the workers' HttpPool.clock_source, once `run` returns
        self.write_error: str | None = None  # why the merged records.jsonl could not be written, if so
        self.records_dropped = 0  # records the workers' writers left out (RecordWriter.dropped)
        self.jobs = [WorkerJob(
            index=i, count=count, base_url=base_url, model=model,
            # Different prompts per worker: identical ones would hit the server's prefix cache.
            workload=workload.model_copy(update={"seed": workload.seed + i}).model_dump(mode="json"),
            levels=[shares[i].model_dump() for shares in self.shares], tokenizer=tokenizer,
            records_path=str(worker_records_path(out_dir, i)), t0=self.t0, keep_text=keep_text,
            records=records, slo=slo.model_dump() if slo is not None else None,
            context_limit=context_limit, auth_headers=auth.current().headers,
        ) for i in range(count)]
        self._procs = [ctx.Process(target=_worker_main, args=(job, self._barrier, self._level_start, self._stop, self._results),
                                   name=f"servesweep-worker-{job.index}", daemon=True) for job in self.jobs]

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self, reason: str | None = None) -> None:
        self._reason = self._reason or reason
        self._stop.set()

    def _on_signal(self) -> None:
        self._interrupted = True
        self.stop("interrupted by signal")

    async def run(self) -> RunOutcome:
        for path in (worker_records_path(self.out_dir, i) for i in range(self.count)):
            path.unlink(missing_ok=True)
        for proc in self._procs:
            proc.start()
        reports: dict[int, dict[str, Any]] = {}
        try:
            async with stop_on_signals(self._on_signal):
                await self._collect(reports)
        except asyncio.CancelledError:
            self.stop("cancelled")
            raise
        finally:
            for proc in self._procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        return self._merge(reports)

    async def _collect(self, reports: dict[int, dict[str, Any]]) -> None:
        """Wait for every worker's report (or for all of them to have exited)."""
        while len(reports) < self.count:
            alive = any(p.is_alive() for p in self._procs)  # checked first: a report may land meanwhile
            while not self._results.empty():
                report = self._results.get()
                reports[report["index"]] = report
            if not alive:
                return
            await asyncio.sleep(0.05)

    def _merge(self, reports: dict[int, dict[str, Any]]) -> RunOutcome:
        outcome = RunOutcome(abort_reason=self._reason)
        clocks = sorted({r["arrival_clock"] for r in reports.values() if r.get("arrival_clock")})
        self.arrival_clock = "; ".join(clocks) or None
        self.records_dropped = sum(r.get("records_dropped", 0) for r in reports.values())
        errors = [f"worker {i}: {r['error']}" for i, r in sorted(reports.items()) if "error" in r]
        missing = [i for i in range(self.count) if i not in reports]
        if errors or missing:
            outcome.abort_reason = outcome.abort_reason or "; ".join(
                errors + [f"worker {i} exited without a report" for i in missing])
        outcome.interrupted = self._interrupted or (
            any(r.get("interrupted") for r in reports.values()) and self._reason is None)
        if outcome.interrupted:
            outcome.abort_reason = outcome.abort_reason or "interrupted by signal"
        elif not errors and not missing:
            first = next((r for r in reports.values() if r.get("abort_reason")), None)
            if outcome.abort_reason is None and first is not None:
                outcome.abort_reason, outcome.abort_kind = first["abort_reason"], first.get("abort_kind")
        if outcome.abort_reason and not outcome.interrupted and outcome.abort_kind is None:
            outcome.abort_kind = "server"
        for n, level in enumerate(self.levels):
            spans = [r["levels"][n] for r in reports.values() if "levels" in r and len(r["levels"]) > n]
            if not spans:
                break
            stats = RunStats(self.slo)
            for span in spans:
                stats.merge(span["stats"])
            self.run_stats.merge(stats)
            clipped = [r["clipped"][n] for r in reports.values() if len(r.get("clipped", ())) > n]
            outcome.levels.append(LevelResult(
                level, min(s["start_s"] for s in spans), max(s["end_s"] for s in spans), [],
                stats.summary(), any(s["wrapped"] for s in spans),
                prompts_clipped=sum(c for c, _ in clipped), prompts_built=sum(b for _, b in clipped)))
        if self.records != RECORDS_NONE:
            try:
                write_merged(self.out_dir, self.count)
            except OutputError as exc:  # a full disk: the summary must still come (exit 5)
                self.write_error = str(exc)
                if outcome.abort_reason is None:
                    outcome.abort_reason, outcome.abort_kind = self.write_error, "output"
        return outcome


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(request id, line) of each whole record line of a file; a torn last line is skipped."""
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            try:
                yield orjson.loads(line)["request_id"], line
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue


def _sorted_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """A worker file's (request id, line) in request-id order. The file is in completion order, so
    it is indexed first: 16 bytes per record (id and offset) are held, never the lines."""
    ids, offsets = array("q"), array("q")
    with open(path, "rb") as f:
        offset = 0
        for line in f:
            if line.endswith(b"\n"):
                try:
                    ids.append(orjson.loads(line)["request_id"])
                    offsets.append(offset)
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
            offset += len(line)
        order = np.argsort(np.frombuffer(ids, dtype=np.int64), kind="stable")
        for i in order.tolist():
            f.seek(offsets[i])
            yield ids[i], f.readline()


def _merged_lines(out_dir: Path, count: int) -> Iterator[tuple[int, bytes]]:
    """Every worker's record lines in request-id order."""
    files = [worker_records_path(out_dir, i) for i in range(count)]
    return heapq.merge(*(_sorted_lines(p) for p in files if p.exists()), key=lambda pair: pair[0])


def write_merged(out_dir: Path, count: int) -> None:
    """records.jsonl: the workers' lines, byte for byte, in request-id order."""
    target = out_dir / "records.jsonl"
    try:
        with open(target, "wb") as f:
            for _, line in _merged_lines(out_dir, count):
                f.write(line)
    except OSError as exc:
        raise OutputError(f"cannot write records to {target}: {exc.strerror or exc}") from exc


def check_merge(out_dir: Path, count: int, slo: SLO | None) -> dict[str, Any]:
    """Re-read the merged file and the workers' files, streaming: same lines in the same order, ids
    unique, and the same statistics from either. With --records none there is nothing to check."""
    merged_path = out_dir / "records.jsonl"
    per_worker = [sum(1 for _ in _lines(worker_records_path(out_dir, i)))
                  if worker_records_path(out_dir, i).exists() else 0 for i in range(count)]
    if not merged_path.exists():
        return {"count": count, "records_per_worker": per_worker, "merged_records": 0,
                "merged_equals_union": None}
    merged = _lines(merged_path)
    union = _merged_lines(out_dir, count)
    same_records, unique_ids, n, last = True, True, 0, None
    for a, b in zip_longest(merged, union):
        if a != b:
            same_records = False
            break
        n += 1
        unique_ids = unique_ids and a[0] != last
        last = a[0]
    # Both in request-id order: float sums then add up in the same order on either side.
    same_stats = summarize(read_records(merged_path), slo) == summarize(
        (RequestRecord.from_dict(orjson.loads(line)) for _, line in _merged_lines(out_dir, count)), slo)
    return {"count": count, "records_per_worker": per_worker, "merged_records": n if same_records else
            sum(1 for _ in _lines(merged_path)),
            "merged_equals_union": bool(same_records and unique_ids and same_stats)}
