"""summary.json of a Locust run: the same shape as `servesweep run` writes, from the merged records.

Records reach the master inside the workers' regular stats reports (Locust's `report_to_master`
event), in the same message as the Locust statistics of the same requests, so whenever the master
has a worker's statistics it has that worker's records too: the summary's count of requests
(completed + failed) equals Locust's request count. Requests cut off when the test stops are kept
as `cancelled` records and are not in Locust's count (Locust drops them).

Every worker also writes its own records to `records.worker-K.jsonl`; when those files are on the
master's disk (workers on the same machine) the master checks that the merged `records.jsonl` is
exactly their union (`workers.merged_equals_union`).

Memory: the master (or single process) keeps no records. `RecordTally` adds each one to running
statistics per level (servesweep.loadgen.stats.RunStats) and `IdTally` keeps a fingerprint of the
request ids (count, sum, sum of squares) for the union check, so a test of any length costs the
same memory. `build_summary` and `worker_check` also take plain lists of records.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable

from servesweep.loadgen.records import RequestRecord, read_records
from servesweep.loadgen.stats import RunStats
from servesweep.loadgen.workers import worker_records_path
from servesweep.locust.config import LocustRunConfig
from servesweep.results import build_summary as build_run_summary, level_entry


class IdTally:
    """A fingerprint of a multiset of request ids: equal fingerprints mean the same ids (a different
    set with the same count, sum and sum of squares is not something a lost or doubled record makes)."""

    __slots__ = ("count", "total", "squares")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.count = self.total = self.squares = 0
        for i in ids:
            self.add(i)

    def add(self, request_id: int) -> None:
        self.count += 1
        self.total += request_id
        self.squares += request_id * request_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdTally) and (self.count, self.total, self.squares) == (
            other.count, other.total, other.squares)


class RecordTally:
    """Running statistics of a test's records, per level label, in bounded memory."""

    def __init__(self, slo: Any = None) -> None:
        self.slo = slo
        self.count = 0
        self.whole = RunStats(slo)
        self.levels: dict[str, RunStats] = {}

    def add(self, record: RequestRecord) -> None:
        self.count += 1
        self.whole.add(record)
        level = self.levels.get(record.level)
        if level is None:
            level = self.levels[record.level] = RunStats(self.slo)
        level.add(record)


def worker_check(out_dir: Path, merged: list[RequestRecord] | IdTally, received: dict[int, int],
                 finished: set[int]) -> dict[str, Any]:
    """Per worker index: records received by the master, records in the worker's own file (where it
    is on this disk), whether it sent its last report; and whether merged == union of the files."""
    per_worker: dict[str, dict[str, Any]] = {}
    file_ids = IdTally()
    files_found = 0
    # Workers on this disk that never reached the master (died before their first report) too.
    on_disk = {int(p.name.split("-")[1].split(".")[0]) for p in out_dir.glob("records.worker-*.jsonl")}
    indexes = sorted(set(received) | on_disk)
    for index in indexes:
        path = worker_records_path(out_dir, index)
        in_file = None
        if path.exists():
            files_found += 1
            in_file = 0
            for r in read_records(path):
                in_file += 1
                file_ids.add(r.request_id)
        per_worker[str(index)] = {"received": received.get(index, 0), "in_file": in_file,
                                  "final_report": index in finished}
    merged_ids = merged if isinstance(merged, IdTally) else IdTally(r.request_id for r in merged)
    union_ok = None
    if indexes and files_found == len(indexes):
        union_ok = merged_ids == file_ids
    return {"count": len(indexes), "per_worker": per_worker, "merged_records": merged_ids.count,
            "merged_equals_union": union_ok,
            "lost": sorted(int(i) for i, w in per_worker.items() if not w["final_report"])}


def _levels(tally: RecordTally, telemetry: Any, wrapped: bool) -> list[dict[str, Any]]:
    levels = []
    # In the order the levels started (their first send).
    for label, stats in sorted(tally.levels.items(), key=lambda kv: kv[1].first_sent_s):
        start = stats.first_sent_s if stats.first_sent_s != float("inf") else 0.0
        end = stats.last_end_s if stats.last_end_s != float("-inf") else 0.0
        levels.append(level_entry(label, {"concurrency": _users(label), "arrival": "closed"}, start, end, wrapped,
                                  stats.summary(), telemetry))
    return levels


def _users(label: str) -> int | None:
    try:
        return int(label.removeprefix("c"))
    except ValueError:
        return None


def build_summary(
    config: LocustRunConfig,
    records: list[RequestRecord] | RecordTally,
    *,
    started_at: dt.datetime,
    host: dict[str, Any],
    load: dict[str, Any],
    locust_stats: dict[str, Any] | None = None,
    telemetry: Any = None,
    metrics_note: str | None = None,
    workers: dict[str, Any] | None = None,
    prompt_pool_wrapped: bool = False,
) -> dict[str, Any]:
    """The summary of one Locust test (one start to stop) from its records, or their tally."""
    if isinstance(records, RecordTally):
        tally = records
    else:
        tally = RecordTally(config.slo)
        for r in sorted(records, key=lambda r: (r.sent_s if r.sent_s is not None else 0.0, r.request_id)):
            tally.add(r)
    levels = _levels(tally, telemetry, prompt_pool_wrapped)
    summary = build_run_summary(
        target={"url": config.base_url, "model": config.model, "max_model_len": config.max_model_len},
        workload=config.workload.describe(), seed=config.workload.seed,
        levels_requested=[lv["spec"] for lv in levels],
        slo=config.slo.model_dump(exclude_none=True) if config.slo else None, tokenizer=config.tokenizer,
        started_at=started_at, host=host, stats=tally.whole.summary(), levels=levels, telemetry=telemetry,
        load_generator="locust",
        run={"scenario": config.scenario, "load": load, "prompt_pool_wrapped": prompt_pool_wrapped})
    if locust_stats is not None:
        summary["locust"] = locust_stats
    if workers is not None:
        summary["workers"] = workers
    if "telemetry" not in summary and metrics_note:
        summary["telemetry"] = {"note": metrics_note}
    return summary
