"""Reading and writing servesweep's files: one atomic JSON writer, one JSONL appender that cuts a
torn last line, the readers that tell a torn last line from damage, and the start-up check of an
output directory. The shapes of the files are in the sibling modules (summary, points,
verification, recommendation), one model per file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from servesweep.errors import OutputDirError, OutputError, ReportError, validation_message

Number = int | float  # kept as written: an int stays an int (pydantic's smart union)

GATE_MEASUREMENT_FILE = "gate-measurement.json"
# The accuracy gate under load (servesweep.quality.gate.under_load), per configuration: the
# measurement with the load's evidence, its verdict beside gate.json, and the load's own records
# and telemetry (files, not a level directory: the report's per-level globs must not take them).
GATE_UNDER_LOAD_MEASUREMENT_FILE = "gate-under-load-measurement.json"
GATE_UNDER_LOAD_FILE = "gate-under-load.json"
GATE_UNDER_LOAD_RECORDS_FILE = "gate-under-load-records.jsonl"
GATE_UNDER_LOAD_SUMMARY_FILE = "gate-under-load-summary.json"
GATE_UNDER_LOAD_TELEMETRY_FILE = "gate-under-load-telemetry.jsonl"


class OpenModel(BaseModel):
    """The base of every result file's model: it names the fields readers rely on and keeps the
    rest (per-level statistics, telemetry, server facts, fields a later version adds), so a file
    of an older or newer version still loads and writes back unchanged."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def to_file(self) -> dict[str, Any]:
        """What the file holds: the fields that were set (by the builder, or read from a file),
        so a field an older file lacks is not written back as null; a section that is an
        OrderedModel keeps its own key order."""
        return _in_order(self, self.model_dump(exclude_unset=True))


class OrderedModel(OpenModel):
    """An OpenModel written back in the order its fields were read or set, as a dict would be:
    points.jsonl's sections are summary.json's, key order and all, though the model names only
    some of their fields."""

    _key_order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, OrderedModel):
            model._key_order = tuple(data)
        return model

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_") and name not in self._key_order:
            self._key_order = (*self._key_order, name)


def _in_order(value: Any, dumped: Any) -> Any:
    """`dumped` (a model_dump of `value`) with every OrderedModel's keys in its own order."""
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        inner = {k: _in_order(getattr(value, k, None), v) for k, v in dumped.items()}
        order = value._key_order if isinstance(value, OrderedModel) else ()
        return {**{k: inner[k] for k in order if k in inner}, **inner}
    if isinstance(value, dict) and isinstance(dumped, dict):
        return {k: _in_order(value.get(k), v) for k, v in dumped.items()}
    if isinstance(value, list) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_in_order(a, b) for a, b in zip(value, dumped)]
    return dumped


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
    return [obj for _, obj in numbered_jsonl(path)]


def numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
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


def read_json_file(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


M = TypeVar("M", bound=BaseModel)
_NEWER_SAID: set[Path] = set()


def read_result_file(path: Path, model: type[M], version: int, remedy: str) -> M:
    """A result file through its model. Damage (not JSON, a shape the model refuses: a torn or
    hand-edited file) is a ReportError (exit 2) naming the file, what is wrong and `remedy`, not a
    traceback. A file of a newer schema_version than `version` is read (its model keeps the fields
    it does not know) and said once on stderr, not silently."""
    try:
        data = orjson.loads(path.read_bytes())
        result = model.model_validate(data)
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{path} is damaged: not valid JSON ({exc}); {remedy}") from None
    except ValidationError as exc:
        raise ReportError(f"{path} is damaged: {validation_message(exc, '(top level)')}; {remedy}") from None
    seen = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(seen, int) and seen > version and path not in _NEWER_SAID:
        _NEWER_SAID.add(path)
        print(f"servesweep: note: {path} has schema_version {seen}, newer than the {version} this servesweep "
              "reads: fields added since are kept but not used; a newer servesweep reads them", file=sys.stderr)
    return result


# Bytes written (and synced) by the start-up check of an output directory: a full disk still takes
# an empty file (an inode, no data block), so only a real write shows it before the run starts.
WRITE_PROBE_BYTES = 64 * 1024


LOCK_FILE = ".servesweep.lock"
# Directories this process holds the lock of (resolved path -> the open lock file): held until the
# process exits, when the kernel releases the lock whatever way it ends.
_CLAIMED: dict[Path, Any] = {}


def claim_dir(path: Path) -> None:
    """Hold `path` for this process: a second servesweep writing into the same directory at the same
    time would move the first one's open records away and overwrite its summary, so it is refused
    (OutputDirError, exit 2) instead. A directory inside one this process holds needs no lock of its own."""
    resolved = path.resolve()
    if any(held == resolved or held in resolved.parents for held in _CLAIMED):
        return
    lock = open(resolved / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise OutputDirError(f"output directory {path} is in use by another servesweep run ({holder}): wait for "
                             "it to finish or give another --out") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    _CLAIMED[resolved] = lock


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents), hold it for this process (`claim_dir`) and prove data can be
    written there, before any work starts: a real write of WRITE_PROBE_BYTES, synced to the disk,
    then removed."""
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
    claim_dir(path)
    return path
