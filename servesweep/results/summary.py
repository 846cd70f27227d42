"""`summary.json`: one load test (`servesweep run`, one sweep point, one Locust test). Both load
generators fill it through `build_summary` (and each level through `level_entry`), so the two
files have one shape; `write_summary` checks it against `Summary` before it writes, and readers
load it through `read_summary`.

Version history (`schema_version`):
  1  the only version so far. `tool.load_generator` ("locust") is present only for Locust runs;
     fields added since (abort_kind, arrival_clock, ci95, soak, prefix_cache, ...) are optional.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol


from servesweep import __version__
from servesweep.crosscheck import cross_check
from servesweep.errors import OutputError
from servesweep.results.io import OpenModel, read_result_file, write_json

SUMMARY_FILE = "summary.json"
SUMMARY_SCHEMA_VERSION = 1


class WindowStats(Protocol):
    """The server's telemetry as the summary needs it (servesweep.backends.base.Telemetry)."""

    def window_stats(self, start_s: float, end_s: float) -> dict[str, Any]: ...


class LevelEntry(OpenModel):
    """One item of `levels`: the level as run, its statistics (servesweep.loadgen.stats), the
    server's telemetry over its window and the timing cross-check's verdict on it."""

    label: str
    spec: dict[str, Any] = {}
    start_s: float = 0.0
    end_s: float = 0.0
    prompt_pool_wrapped: bool = False
    completed: int = 0
    failed: int = 0
    telemetry: dict[str, Any] | None = None
    timing_check: dict[str, Any] | None = None


class Summary(OpenModel):
    """`summary.json`: the fields readers rely on; statistics and the writer's own sections (trace,
    sessions, soak, ci95, locust, workers, ...) are kept as they are."""

    schema_version: int = SUMMARY_SCHEMA_VERSION
    tool: dict[str, Any] = {}
    target: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    seed: int | None = None
    levels_requested: list[dict[str, Any]] = []
    slo: dict[str, Any] | None = None
    tokenizer: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    host: dict[str, Any] = {}
    interrupted: bool = False
    abort_reason: str | None = None
    completed: int = 0
    failed: int = 0
    warnings: list[str] = []
    levels: list[LevelEntry] = []
    timing_suspect_levels: list[str] = []
    telemetry: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    workers: dict[str, Any] | None = None
    output_error: str | None = None
    summary_path: str | None = None


def level_entry(label: str, spec: dict[str, Any], start_s: float, end_s: float, prompt_pool_wrapped: bool,
                stats: dict[str, Any], telemetry: WindowStats | None) -> dict[str, Any]:
    """One item of `levels` from the level's statistics (RunStats.summary())."""
    entry: dict[str, Any] = {"label": label, "spec": spec, "start_s": start_s, "end_s": end_s,
                             "prompt_pool_wrapped": prompt_pool_wrapped}
    entry.update(stats)
    if telemetry is not None:
        entry["telemetry"] = telemetry.window_stats(start_s, end_s)
    check = cross_check(stats, entry.get("telemetry"))
    if check is not None:
        entry["timing_check"] = check
    return entry


def build_summary(*, target: dict[str, Any], workload: dict[str, Any], seed: int | None,
                  levels_requested: list[dict[str, Any]], slo: dict[str, Any] | None, tokenizer: str | None,
                  started_at: dt.datetime, host: dict[str, Any], stats: dict[str, Any], levels: list[dict[str, Any]],
                  telemetry: WindowStats | None = None, interrupted: bool = False, abort_reason: str | None = None,
                  load_generator: str | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of one load test: the common head, the generator's own facts about the run
    (`run`: trace, sessions, clock; or Locust's scenario and load shape), the whole test's
    statistics, its levels (`level_entry`), and the telemetry over all of them. The writer adds its
    own sections after (repeats, soak, workers, ...) and writes it with `write_summary`."""
    tool = {"name": "servesweep", "version": __version__}
    if load_generator is not None:
        tool["load_generator"] = load_generator
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "tool": tool,
        "target": target,
        "workload": workload,
        "seed": seed,
        "levels_requested": levels_requested,
        "slo": slo,
        "tokenizer": tokenizer,
        "started_at": started_at.isoformat(),
        "ended_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "host": host,
        "interrupted": interrupted,
        "abort_reason": abort_reason,
        **(run or {}),
    }
    summary.update(stats)
    summary["levels"] = levels
    summary["timing_suspect_levels"] = [lv["label"] for lv in levels if (lv.get("timing_check") or {}).get("suspect")]
    if telemetry is not None and levels:
        summary["telemetry"] = telemetry.window_stats(min(lv["start_s"] for lv in levels),
                                                      max(lv["end_s"] for lv in levels))
    return summary


def write_summary(out: Path, summary: dict[str, Any], name: str = SUMMARY_FILE) -> Path | None:
    """`out/summary.json` (or `name`), or, when the disk refuses it, the same summary in a fallback place (the
    temporary directory, then the home directory), with `output_error` saying why and
    `summary_path` where it went. Returns where it was written; None when nowhere would take it.
    The summary is checked against `Summary` first (a writer that broke the shape is a bug) and
    written as built, key order and all."""
    Summary.model_validate(summary)
    try:
        write_json(out / name, summary)
        return out / name
    except OutputError as exc:
        summary["output_error"] = summary.get("output_error") or str(exc)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"servesweep-summary-{stamp}-{os.getpid()}.json"
    for folder in (Path(tempfile.gettempdir()), Path.home()):
        path = folder / name
        summary["summary_path"] = str(path)
        try:
            write_json(path, summary)
            return path
        except OutputError:
            continue
    summary["summary_path"] = None
    return None


def read_summary(path: Path) -> Summary:
    return read_result_file(path, Summary, SUMMARY_SCHEMA_VERSION, "the run's records.jsonl holds every request; "
                            "rerun the measurement for a new summary")
