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

from pydantic import AliasChoices, Field, ValidationError

from servesweep.errors import ReportError, validation_problem
from servesweep.memory_fraction import FRACTION_RULES, FractionOf
from servesweep.results.io import OpenModel, append_jsonl, numbered_jsonl

POINTS_FILE = "points.jsonl"
POINTS_SCHEMA_VERSION = 1

# Points written before backends recorded their kind, knob names and memory rule came from vLLM.
KIND_BEFORE_RECORDED = "vllm"
_KNOBS_BEFORE_RECORDED = {"max_batch_size": "max_num_seqs", "memory_fraction": "gpu_memory_utilization",
                          "kv_cache_memory_bytes": "kv_cache_memory_bytes", "max_num_tokens": "max_num_batched_tokens"}


Number = int | float  # kept as written: an int stays an int (pydantic's smart union)


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


class PointFigures(OpenModel):
    """A point's `summary` (its level's summary.json, results.summary) as the analysis reads it:
    None where the file lacks a figure."""

    completed: int | None = None
    failed: int | None = None
    request_throughput: Number | None = None
    output_token_throughput: Number | None = None
    total_token_throughput: Number | None = None
    ttft_ms: dict[str, Any] | None = None
    tpot_ms: dict[str, Any] | None = None
    itl_ms: dict[str, Any] | None = None
    e2e_ms: dict[str, Any] | None = None
    goodput: dict[str, Any] | None = None
    suspect: bool | None = None
    timing_check: dict[str, Any] | None = None

    def quantile(self, metric: str, q: str) -> Number | None:
        """`metric` (ttft_ms, tpot_ms, itl_ms, e2e_ms) at `q` (p50, p90, p99, ...)."""
        return (getattr(self, metric, None) or {}).get(q)

    @property
    def request_goodput(self) -> Number | None:
        return (self.goodput or {}).get("request_goodput")


class PointTelemetry(OpenModel):
    """The server's figures over a point's window (servesweep.backends.telemetry `window_stats`)."""

    running_batch_mean: Number | None = None
    running_batch_peak: Number | None = None
    kv_cache_peak_frac: Number | None = None
    kv_cache_peak_bytes: Number | None = None
    kv_pool_bytes: Number | None = None
    preemptions: Number | None = None
    oom_margin_pct: Number | None = None
    device_mem_peak_bytes: Number | None = None
    device_mem_total_bytes: Number | None = None
    kv_pool_tokens: Number | None = None
    gpu_power_mean_w: Number | None = None  # NVML board power over the window, summed over the GPUs


class PointServer(OpenModel):
    """What the backend recorded about the server a point ran on (`server`), as the verification
    and the SKU measurement read it: its GPUs, its measured start, its KV pool at start-up."""

    gpus: list[str] | None = None  # device names, as the server's host reports them
    startup_s: Number | None = None  # launch to ready
    kv_pool: dict[str, Any] | None = None  # the pool as the server logged it (block_size, tokens, bytes, ...)
    kv_pool_tokens: Number | None = None
    kv_pool_bytes: Number | None = None

    @property
    def block_size(self) -> int | None:
        return (self.kv_pool or {}).get("block_size")


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
    timing_check: dict[str, Any] | None = None

    # Typed views of the nested sections, for the analysis (the sections stay plain in the file).
    @property
    def spec(self) -> PointConfig:
        return PointConfig.model_validate(self.config_spec)

    @property
    def load(self) -> PointLevel:
        return PointLevel.model_validate(self.level_spec)

    @property
    def figures(self) -> PointFigures:
        return PointFigures.model_validate(self.summary or {})

    @property
    def server_telemetry(self) -> PointTelemetry:
        return PointTelemetry.model_validate(self.telemetry or {})

    @property
    def server_record(self) -> PointServer:
        return PointServer.model_validate(self.server or {})

    @property
    def suspect(self) -> bool:
        """The timing cross-check's verdict on the level, where the point carries one."""
        figures = self.figures
        extra = self.model_extra or {}
        return bool(extra.get("suspect") or figures.suspect or (self.timing_check or {}).get("suspect")
                    or (figures.timing_check or {}).get("suspect"))


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


def knob_names(point: dict[str, Any]) -> dict[str, str]:
    """The server's names for the common configuration knobs, as its backend recorded them."""
    return {**_KNOBS_BEFORE_RECORDED, **((point.get("server") or {}).get("knobs") or {})}


def memory_fraction_of(point: dict[str, Any]) -> FractionOf:
    """What the point's memory fraction is a fraction of (servesweep.memory_fraction), as its backend
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


def headline_from_repeats(summary: dict[str, Any]) -> None:
    """A point run with repeats: its throughput figures become the means over the repeats (what the
    report and the searches compare); the whole load test's, whose window also spans the gaps
    and warm-ups between repeats, stay under `pooled_over_repeats`. Latency percentiles stay
    pooled over every measured request of the repeats."""
    ci = next(iter((summary.get("ci95") or {}).values()), None)
    if not ci:
        return
    pooled = summary.setdefault("pooled_over_repeats", {k: summary.get(k) for k in
                                                        ("output_token_throughput", "request_throughput")})
    if summary.get("goodput"):
        pooled.setdefault("request_goodput", summary["goodput"].get("request_goodput"))
    for key, ci_key in (("output_token_throughput", "output_tok_s"), ("request_throughput", "request_throughput")):
        if (ci.get(ci_key) or {}).get("mean") is not None:
            summary[key] = ci[ci_key]["mean"]
    if summary.get("goodput") and (ci.get("goodput") or {}).get("mean") is not None:
        summary["goodput"]["request_goodput"] = ci["goodput"]["mean"]


# What a point keeps of its summary's `server` section.
POINT_SERVER_KEYS = ("backend", "version", "startup_s", "kv_pool_tokens", "kv_pool_bytes", "kv_pool", "command",
                     "gpus", "knobs", "memory_fraction_of")


def point_from_summary(config: str, config_spec: dict[str, Any], level: str, level_spec: dict[str, Any],
                       summary: dict[str, Any], level_dir: str, died: str | None = None) -> dict[str, Any]:
    """points.jsonl's row for one level's summary.json (the one way a sweep point is built from a
    summary): the summary less its levels, its headline the repeats' means (headline_from_repeats);
    `died`: why the server died during the level, which fails the point."""
    result = {k: v for k, v in summary.items() if k != "levels"}
    headline_from_repeats(result)
    point: dict[str, Any] = {
        "config": config, "config_spec": config_spec, "level": level, "level_spec": level_spec,
        "status": "ok", "summary": result, "telemetry": summary.get("telemetry"),
        "server": {k: summary["server"].get(k) for k in POINT_SERVER_KEYS},
        "dir": level_dir,
        # The level's timing cross-check: a suspect one is named in every SLO verdict taken on it.
        "timing_check": (summary.get("levels") or [{}])[0].get("timing_check"),
    }
    if summary.get("interrupted"):
        point["status"], point["interrupted"] = "interrupted", True
    elif died or (summary.get("abort_reason") and summary["completed"] == 0):
        point["status"], point["cause"] = "failed", died or summary["abort_reason"]
    return point
