"""summary.json of a Locust run: the same shape as `servesweep run` writes, from the merged records.

Records reach the master inside the workers' regular stats reports (Locust's `report_to_master`
event), in the same message as the Locust statistics of the same requests, so whenever the master
has a worker's statistics it has that worker's records too: the summary's count of requests
(completed + failed) equals Locust's request count. Requests cut off when the test stops are kept
as `cancelled` records and are not in Locust's count (Locust drops them).

Every worker also writes its own records to `records.worker-K.jsonl`; when those files are on the
master's disk (workers on the same machine) the master checks that the merged `records.jsonl` is
exactly their union (`workers.merged_equals_union`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from servesweep import __version__
from servesweep.crosscheck import cross_check
from servesweep.loadgen.records import RequestRecord, read_records
from servesweep.loadgen.stats import summarize
from servesweep.loadgen.workers import worker_records_path
from servesweep.locust.config import LocustRunConfig
from servesweep.results import SCHEMA_VERSION


def worker_check(out_dir: Path, merged: list[RequestRecord], received: dict[int, int],
                 finished: set[int]) -> dict[str, Any]:
    """Per worker index: records received by the master, records in the worker's own file (where it
    is on this disk), whether it sent its last report; and whether merged == union of the files."""
    per_worker: dict[str, dict[str, Any]] = {}
    file_ids: set[int] = set()
    files_found = 0
    # Workers on this disk that never reached the master (died before their first report) too.
    on_disk = {int(p.name.split("-")[1].split(".")[0]) for p in out_dir.glob("records.worker-*.jsonl")}
    indexes = sorted(set(received) | on_disk)
    for index in indexes:
        path = worker_records_path(out_dir, index)
        in_file = None
        if path.exists():
            files_found += 1
            ids = [r.request_id for r in read_records(path)]
            in_file = len(ids)
            file_ids.update(ids)
        per_worker[str(index)] = {"received": received.get(index, 0), "in_file": in_file,
                                  "final_report": index in finished}
    merged_ids = {r.request_id for r in merged}
    union_ok = None
    if indexes and files_found == len(indexes):
        union_ok = merged_ids == file_ids and len(merged_ids) == len(merged)
    return {"count": len(indexes), "per_worker": per_worker, "merged_records": len(merged),
            "merged_equals_union": union_ok,
            "lost": sorted(int(i) for i, w in per_worker.items() if not w["final_report"])}


def _levels(records: list[RequestRecord], config: LocustRunConfig, telemetry: Any,
            wrapped: bool) -> list[dict[str, Any]]:
    by_label: dict[str, list[RequestRecord]] = {}
    for r in records:
        by_label.setdefault(r.level, []).append(r)
    levels = []
    for label, recs in by_label.items():
        starts = [r.sent_s for r in recs if r.sent_s is not None]
        ends = [r.end_s for r in recs if r.end_s is not None]
        entry: dict[str, Any] = {"label": label, "spec": {"concurrency": _users(label), "arrival": "closed"},
                                 "start_s": min(starts) if starts else 0.0, "end_s": max(ends) if ends else 0.0,
                                 "prompt_pool_wrapped": wrapped}
        entry.update(summarize(recs, config.slo))
        if telemetry is not None:
            entry["telemetry"] = telemetry.window_stats(entry["start_s"], entry["end_s"])
        check = cross_check(entry, entry.get("telemetry"))
        if check is not None:
            entry["timing_check"] = check
        levels.append(entry)
    return levels


def _users(label: str) -> int | None:
    try:
        return int(label.removeprefix("c"))
    except ValueError:
        return None


def build_summary(
    config: LocustRunConfig,
    records: list[RequestRecord],
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
    """The summary of one Locust test (one start to stop) from its records."""
    records = sorted(records, key=lambda r: (r.sent_s if r.sent_s is not None else 0.0, r.request_id))
    levels = _levels(records, config, telemetry, prompt_pool_wrapped)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "servesweep", "version": __version__, "load_generator": "locust"},
        "target": {"url": config.base_url, "model": config.model, "max_model_len": config.max_model_len},
        "workload": config.workload.describe(),
        "seed": config.workload.seed,
        "scenario": config.scenario,
        "levels_requested": [lv["spec"] for lv in levels],
        "slo": config.slo.model_dump(exclude_none=True) if config.slo else None,
        "tokenizer": config.tokenizer,
        "started_at": started_at.isoformat(),
        "ended_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "host": host,
        "load": load,
        "interrupted": False,
        "abort_reason": None,
        "prompt_pool_wrapped": prompt_pool_wrapped,
    }
    summary.update(summarize(records, config.slo))
    summary["levels"] = levels
    if locust_stats is not None:
        summary["locust"] = locust_stats
    if workers is not None:
        summary["workers"] = workers
    summary["timing_suspect_levels"] = [lv["label"] for lv in levels if lv.get("timing_check", {}).get("suspect")]
    if telemetry is not None and levels:
        summary["telemetry"] = telemetry.window_stats(min(lv["start_s"] for lv in levels),
                                                      max(lv["end_s"] for lv in levels))
    elif metrics_note:
        summary["telemetry"] = {"note": metrics_note}
    return summary
