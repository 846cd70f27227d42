"""`points.jsonl`: one line per configuration x load level of a sweep, written by the sweep as each
point finishes (`append_point`, the one builder) and read back through `SweepPoint` (`read_points`).

Version history (`schema_version` on each line):
  1  Lines written before backends recorded their kind, knob names and memory rule
     (`server.knobs`, `server.memory_fraction_of`) and before `dummy_weights` was backend-neutral
     load as vLLM's (KIND_BEFORE_RECORDED, `knob_names`, `dummy_weights`). A point run with
     repeats wrote the means over its repeats in place of `summary`'s output_token_throughput,
     request_throughput and goodput.request_goodput, and the load test's own figures under
     `summary.pooled_over_repeats`: read as version 2 (`SweepPoint._pooled_headline`).
  2  `summary`'s figures are the load test's own, as in its summary.json; with repeats, the means
     over the repeats are ci95's (the headline view, `Summary.headline_*`), not written twice.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, model_validator

from servesweep.errors import ReportError, validation_problem
from servesweep.memory_fraction import FRACTION_RULES, FractionOf
from servesweep.results.io import OpenModel, OrderedModel, append_jsonl, numbered_jsonl
from servesweep.results.summary import Number, ServerRecord, Summary, TimingCheck, WindowTelemetry

POINTS_FILE = "points.jsonl"
POINTS_SCHEMA_VERSION = 2

# Points written before backends recorded their kind, knob names and memory rule came from vLLM.
KIND_BEFORE_RECORDED = "vllm"
_KNOBS_BEFORE_RECORDED = {"max_batch_size": "max_num_seqs", "memory_fraction": "gpu_memory_utilization",
                          "kv_cache_memory_bytes": "kv_cache_memory_bytes", "max_num_tokens": "max_num_batched_tokens"}


class PointConfig(OpenModel):
    """The fields of a point's server configuration (`config_spec`) the analysis reads; files written
    before backends owned their knobs say vLLM's names (max_num_seqs, gpu_memory_utilization)."""

    kind: str = KIND_BEFORE_RECORDED
    model: str | None = None
    precision: str
    max_batch_size: int | None = Field(None, validation_alias=AliasChoices("max_batch_size", "max_num_seqs"))
    memory_fraction: float | None = Field(None, validation_alias=AliasChoices("memory_fraction",
                                                                              "gpu_memory_utilization"))
    kv_cache_dtype: str | None = None


class PointLevel(OpenModel):
    """The load of a point's level (`level_spec`): a closed-loop concurrency or an open-loop rate."""

    concurrency: int | None = None
    request_rate: Number | None = None


class SweepPoint(OrderedModel):
    """One line of `points.jsonl`: a configuration x a load level, ok or failed with its cause.
    `summary` is the level's `summary.json` less its levels (results.summary: the load test's own
    figures, their means over repeats a view: `Summary.headline_*`), `telemetry` the server's
    figures over the level's window, `server` what the backend recorded about the server it
    launched. Fields in the order the sweep writes them."""

    schema_version: int = POINTS_SCHEMA_VERSION
    config: str
    config_spec: dict[str, Any]
    level: str
    level_spec: dict[str, Any] = {}
    status: str  # ok | failed | interrupted
    summary: Summary | None = None
    telemetry: WindowTelemetry | None = None
    server: ServerRecord | None = None
    dir: str | None = None  # the level's directory, relative to the sweep's
    timing_check: TimingCheck | None = None
    interrupted: bool = False
    cause: str | None = None
    suspect: bool | None = None  # the timing cross-check's verdict, where a writer put it at the top
    search: dict[str, Any] | None = None  # the adaptive search's rung and why it asked for it
    extra_repeats: list[dict[str, Any]] = []  # the uncertain rung's extra repeats folded in (dir, why)

    @model_validator(mode="before")
    @classmethod
    def _pooled_headline(cls, data: Any) -> Any:
        """Version 1 with repeats wrote the means over the repeats in place of the load test's own
        figures and kept those under `summary.pooled_over_repeats`: put them back (version 2's
        layout; the means are ci95's, read through the headline view)."""
        if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
            return data
        summary = dict(data["summary"])
        pooled = summary.pop("pooled_over_repeats", None)
        if pooled is None:
            return data
        for key in ("output_token_throughput", "request_throughput"):
            if key in pooled:
                summary[key] = pooled[key]
        if "request_goodput" in pooled and isinstance(summary.get("goodput"), dict):
            summary["goodput"] = {**summary["goodput"], "request_goodput": pooled["request_goodput"]}
        return {**data, "schema_version": POINTS_SCHEMA_VERSION, "summary": summary}

    # Typed views of the nested sections, for the analysis (the sections stay plain in the file).
    @property
    def spec(self) -> PointConfig:
        return PointConfig.model_validate(self.config_spec)

    @property
    def load(self) -> PointLevel:
        return PointLevel.model_validate(self.level_spec)

    @property
    def figures(self) -> Summary:
        """The level's summary; an empty one (every figure None) for a point that has none."""
        return self.summary if self.summary is not None else Summary()

    @property
    def server_telemetry(self) -> WindowTelemetry:
        return self.telemetry if self.telemetry is not None else WindowTelemetry()

    @property
    def server_record(self) -> ServerRecord:
        return self.server if self.server is not None else ServerRecord()

    @property
    def timing_suspect(self) -> bool:
        """The timing cross-check's verdict on the level, where the point carries one."""
        figures = self.figures
        return bool(self.suspect or figures.suspect or (self.timing_check and self.timing_check.suspect)
                    or (figures.timing_check and figures.timing_check.suspect))


def read_points(out_dir: Path) -> list[SweepPoint]:
    """The sweep's points, each read through `SweepPoint`; a point that is not one is a
    ReportError naming the file, the point and the field."""
    points = []
    for n, raw in numbered_jsonl(out_dir / POINTS_FILE):
        try:
            points.append(SweepPoint.model_validate(raw))
        except ValidationError as exc:
            # pydantic's message lowered: it reads inside the sentence ("field required").
            err = exc.errors()[0]
            problem = validation_problem({**err, "msg": str(err["msg"]).lower()}, "(top level)")
            raise ReportError(f"{out_dir / POINTS_FILE}:{n}: not a sweep point ({problem})") from None
    return points


def append_point(out_dir: Path, point: SweepPoint | dict[str, Any]) -> None:
    """Add one point (or the fields of one) to the sweep's file, stamped with the schema version and
    the time it finished."""
    if not isinstance(point, SweepPoint):
        point = SweepPoint.model_validate(point)
    data = {"schema_version": POINTS_SCHEMA_VERSION, **point.to_file(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    SweepPoint.model_validate(data)
    append_jsonl(out_dir / POINTS_FILE, data)


def knob_names(server: ServerRecord | None) -> dict[str, str]:
    """The server's names for the common configuration knobs, as its backend recorded them
    (vLLM's for a point written before backends recorded them, or without a server)."""
    return {**_KNOBS_BEFORE_RECORDED, **((server.knobs if server is not None else None) or {})}


def memory_fraction_of(server: ServerRecord | None) -> FractionOf:
    """What a point's memory fraction is a fraction of (servesweep.memory_fraction), as its backend
    recorded it; for points written before, read off the knob's name (TensorRT-LLM's says free)."""
    recorded = server.memory_fraction_of if server is not None else None
    if recorded in FRACTION_RULES:
        return recorded  # type: ignore[return-value]
    return "free" if "free" in knob_names(server)["memory_fraction"] else "device"


def dummy_weights(spec: dict[str, Any]) -> bool | None:
    """A stored server configuration's or scenario's `dummy_weights`; files written before it was
    backend-neutral say vLLM's `load_format` (dummy / auto)."""
    if spec.get("dummy_weights") is not None:
        return bool(spec["dummy_weights"])
    fmt = spec.get("load_format")
    return None if fmt is None else fmt == "dummy"


# What a point keeps of its summary's `server` section.
POINT_SERVER_KEYS = ("backend", "version", "startup_s", "kv_pool_tokens", "kv_pool_bytes", "kv_pool", "command",
                     "gpus", "knobs", "memory_fraction_of")


def point_from_summary(config: str, config_spec: dict[str, Any], level: str, level_spec: dict[str, Any],
                       summary: dict[str, Any], level_dir: str, died: str | None = None) -> SweepPoint:
    """points.jsonl's row for one level's summary.json (the one way a sweep point is built from a
    summary): the summary less its levels, figures and all as the load test wrote them (with
    repeats, their means are the headline view); `died`: why the server died during the level,
    which fails the point."""
    point: dict[str, Any] = {
        "config": config, "config_spec": config_spec, "level": level, "level_spec": level_spec,
        "status": "ok", "summary": {k: v for k, v in summary.items() if k != "levels"},
        "telemetry": summary.get("telemetry"),
        "server": {k: summary["server"].get(k) for k in POINT_SERVER_KEYS},
        "dir": level_dir,
        # The level's timing cross-check: a suspect one is named in every SLO verdict taken on it.
        "timing_check": (summary.get("levels") or [{}])[0].get("timing_check"),
    }
    if summary.get("interrupted"):
        point["status"], point["interrupted"] = "interrupted", True
    elif died or (summary.get("abort_reason") and summary["completed"] == 0):
        point["status"], point["cause"] = "failed", died or summary["abort_reason"]
    return SweepPoint.model_validate(point)
