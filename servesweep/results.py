"""The files servesweep writes and reads back: one JSON writer, the shapes of `summary.json` and
`points.jsonl`, and their schema version. Runs write these; reports only read them.

`Summary` and `SweepPoint` name the fields other code relies on and allow the rest (per-level
statistics, telemetry, server facts), so files of an older version still load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from servesweep.errors import OutputDirError, OutputError, ReportError, validation_problem
from servesweep.memory import FRACTION_RULES, FractionOf

SCHEMA_VERSION = 1
POINTS_FILE = "points.jsonl"
SUMMARY_FILE = "summary.json"
GATE_MEASUREMENT_FILE = "gate-measurement.json"
# The accuracy gate under load (servesweep.quality.gate.under_load), per configuration: the
# measurement with the load's evidence, its verdict beside gate.json, and the load's own records
# and telemetry (files, not a level directory: the report's per-level globs must not take them).
GATE_UNDER_LOAD_MEASUREMENT_FILE = "gate-under-load-measurement.json"
GATE_UNDER_LOAD_FILE = "gate-under-load.json"
GATE_UNDER_LOAD_RECORDS_FILE = "gate-under-load-records.jsonl"
GATE_UNDER_LOAD_TELEMETRY_FILE = "gate-under-load-telemetry.jsonl"

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(data: Any, indent: bool = False) -> bytes:
    return orjson.dumps(data, option=_JSON_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0))


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so a crash mid-write never leaves a torn file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(dumps(data, indent=True))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def append_jsonl(path: Path, data: Any) -> None:
    """Append one line. A torn last line (a crash or a full disk mid-write) is cut off first, so
    that only the last line of a file can ever be torn, and the reader can tell that from damage."""
    try:
        with open(path, "ab") as f:
            end = f.seek(0, os.SEEK_END)
            if end:
                with open(path, "rb") as r:
                    r.seek(max(0, end - 1))
                    if r.read(1) != b"\n":
                        r.seek(0)
                        f.truncate(r.read().rfind(b"\n") + 1)
            f.write(dumps(data) + b"\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_summary(out: Path, summary: dict[str, Any]) -> Path | None:
    """`out/summary.json`, or, when the disk refuses it, the same summary in a fallback place (the
    temporary directory, then the home directory), with `output_error` saying why and
    `summary_path` where it went. Returns where it was written; None when nowhere would take it."""
    try:
        write_json(out / SUMMARY_FILE, summary)
        return out / SUMMARY_FILE
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


def torn_last_line(path: Path) -> int | None:
    """The number of a JSONL file's last line when it is torn (not valid JSON: a crash or a full
    disk mid-write), which the readers here leave out; None when the file is whole or absent."""
    if not path.exists():
        return None
    lines = path.read_bytes().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return None
    try:
        orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        return len(lines)
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file. A torn last line (a crash mid-write) is skipped; a malformed
    line before it is damage, not a crash, and is a ReportError naming the file and line."""
    return [obj for _, obj in _numbered_jsonl(path)]


def _numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            if n == len(lines):
                continue
            raise ReportError(f"{path}:{n}: not valid JSON ({exc}); the file is damaged: repair or delete "
                              "that line") from None
    return out


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Summary(_Open):
    """`summary.json` of one load test (servesweep run, or one sweep point)."""

    schema_version: int = SCHEMA_VERSION
    completed: int = 0
    failed: int = 0
    interrupted: bool = False
    abort_reason: str | None = None
    levels: list[dict[str, Any]] = []


class SweepPoint(_Open):
    """One line of `points.jsonl`: a configuration x a load level, ok or failed with its cause."""

    schema_version: int = SCHEMA_VERSION
    config: str
    config_spec: dict[str, Any]
    level: str
    level_spec: dict[str, Any] = {}
    status: str  # ok | failed | interrupted
    cause: str | None = None
    summary: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    server: dict[str, Any] | None = None


# Points written before backends recorded their kind, knob names and memory rule came from vLLM.
KIND_BEFORE_RECORDED = "vllm"
_KNOBS_BEFORE_RECORDED = {"max_batch_size": "max_num_seqs", "memory_fraction": "gpu_memory_utilization",
                          "kv_cache_memory_bytes": "kv_cache_memory_bytes", "max_num_tokens": "max_num_batched_tokens"}


def knob_names(point: dict[str, Any]) -> dict[str, str]:
    """The server's names for the common configuration knobs, as its backend recorded them."""
    return {**_KNOBS_BEFORE_RECORDED, **((point.get("server") or {}).get("knobs") or {})}


def memory_fraction_of(point: dict[str, Any]) -> FractionOf:
    """What the point's memory fraction is a fraction of (servesweep.memory), as its backend
    recorded it; for points written before, read off the knob's name (TensorRT-LLM's says free)."""
    server = point.get("server") or {}
    recorded = server.get("memory_fraction_of")
    if recorded in FRACTION_RULES:
        return recorded
    return "free" if "free" in knob_names(point)["memory_fraction"] else "device"


def dummy_weights(spec: dict[str, Any]) -> bool | None:
    """A stored server configuration's or scenario's `dummy_weights`; files written before it was
    backend-neutral say vLLM's `load_format` (dummy / auto)."""
    if spec.get("dummy_weights") is not None:
        return bool(spec["dummy_weights"])
    fmt = spec.get("load_format")
    return None if fmt is None else fmt == "dummy"


def read_json_file(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def read_summary(path: Path) -> Summary:
    return Summary.model_validate(orjson.loads(path.read_bytes()))


def read_points(out_dir: Path) -> list[dict[str, Any]]:
    """The sweep's points, each checked against `SweepPoint` (returned as plain dicts); a point
    that is not one is a ReportError naming the file, the point and the field."""
    points = []
    for n, raw in _numbered_jsonl(out_dir / POINTS_FILE):
        try:
            points.append(SweepPoint.model_validate(raw).model_dump())
        except ValidationError as exc:
            # pydantic's message lowered: it reads inside the sentence ("field required").
            err = exc.errors()[0]
            problem = validation_problem({**err, "msg": str(err["msg"]).lower()}, "(top level)")
            raise ReportError(f"{out_dir / POINTS_FILE}:{n}: not a sweep point ({problem})") from None
    return points


def append_point(out_dir: Path, point: dict[str, Any]) -> None:
    point = {"schema_version": SCHEMA_VERSION, **point,
             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    SweepPoint.model_validate(point)
    append_jsonl(out_dir / POINTS_FILE, point)


# Bytes written (and synced) by the start-up check of an output directory: a full disk still takes
# an empty file (an inode, no data block), so only a real write shows it before the run starts.
WRITE_PROBE_BYTES = 64 * 1024


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) and prove data can be written there, before any work starts:
    a real write of WRITE_PROBE_BYTES, synced to the disk, then removed."""
    probe = path / f".servesweep-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * WRITE_PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except FileExistsError:
        raise OutputDirError(f"output directory {path}: a file of that name (or a parent of it) is in the way") from None
    except NotADirectoryError:
        raise OutputDirError(f"output directory {path}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise OutputDirError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return path
