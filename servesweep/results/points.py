"""`points.jsonl`: one line per configuration x load level of a sweep, written by the sweep as each
point finishes (`append_point`, the one builder) and read back through `SweepPoint` (`read_points`).

Version history (`schema_version` on each line):
  1  the only version so far. Lines written before backends recorded their kind, knob names and
     memory rule (`server.knobs`, `server.memory_fraction_of`) and before `dummy_weights` was
     backend-neutral load as vLLM's (KIND_BEFORE_RECORDED, `knob_names`, `dummy_weights`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from servesweep.errors import ReportError, validation_problem
from servesweep.memory import FRACTION_RULES, FractionOf
from servesweep.results.io import OpenModel, append_jsonl, numbered_jsonl

POINTS_FILE = "points.jsonl"
POINTS_SCHEMA_VERSION = 1


class SweepPoint(OpenModel):
    """One line of `points.jsonl`: a configuration x a load level, ok or failed with its cause.
    `summary` is the level's `summary.json` (results.summary), `telemetry` the server's figures
    over the level's window, `server` what the backend recorded about the server it launched."""

    schema_version: int = POINTS_SCHEMA_VERSION
    config: str
    config_spec: dict[str, Any]
    level: str
    level_spec: dict[str, Any] = {}
    status: str  # ok | failed | interrupted
    cause: str | None = None
    summary: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    server: dict[str, Any] | None = None


def read_points(out_dir: Path) -> list[dict[str, Any]]:
    """The sweep's points, each checked against `SweepPoint` (returned as plain dicts: the analysis
    turns them into a table); a point that is not one is a ReportError naming the file, the point
    and the field."""
    points = []
    for n, raw in numbered_jsonl(out_dir / POINTS_FILE):
        try:
            points.append(SweepPoint.model_validate(raw).model_dump())
        except ValidationError as exc:
            # pydantic's message lowered: it reads inside the sentence ("field required").
            err = exc.errors()[0]
            problem = validation_problem({**err, "msg": str(err["msg"]).lower()}, "(top level)")
            raise ReportError(f"{out_dir / POINTS_FILE}:{n}: not a sweep point ({problem})") from None
    return points


def append_point(out_dir: Path, point: dict[str, Any]) -> None:
    """Add one point to the sweep's file, stamped with the schema version and the time it finished."""
    point = {"schema_version": POINTS_SCHEMA_VERSION, **point,
             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    SweepPoint.model_validate(point)
    append_jsonl(out_dir / POINTS_FILE, point)


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
