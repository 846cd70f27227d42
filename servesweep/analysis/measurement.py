"""A sweep's figures on the GPU it ran on (analysis/skus.py's `SkuMeasurement`), read from its
results: the knee and the throughput and TTFT there, TPOT at the smallest batch, and the KV pool
at the memory fraction the server ran with. Reads result files only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from servesweep.errors import ReportError
from servesweep.files import display_path
from servesweep.analysis.selection import batch_sweep, points_frame, precision_sweep
from servesweep.analysis.skus import PrecisionMeasurement, SkuMeasurement, sku_from_gpu_name
from servesweep.results import POINTS_FILE, SweepPoint, read_points
from servesweep.results.recommendation import BatchSweep, PrecisionEntry
from servesweep.results.sweep_files import SCENARIO_FILE, ScenarioRecord


def gpu_name(points: list[SweepPoint]) -> str | None:
    for p in points:
        gpus = p.server_record.gpus
        if gpus:
            return gpus[0]
    return None


def read_sweep(results_dir: Path) -> tuple[ScenarioRecord, list[SweepPoint]]:
    """(scenario, points) of a sweep directory; a ReportError (one line) when it holds none."""
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir} is not a sweep directory: "
                          + ("it does not exist" if not results_dir.exists() else "it is a file"))
    scenario_path = results_dir / SCENARIO_FILE
    if not scenario_path.exists():
        raise ReportError(f"{results_dir} is not a sweep directory (no scenario.json); run `servesweep sweep` first")
    try:
        scenario = ScenarioRecord.model_validate(json.loads(scenario_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{scenario_path} cannot be read: {exc}") from None
    points = read_points(results_dir)
    if not points:
        raise ReportError(f"{results_dir}/{POINTS_FILE} has no finished points yet")
    return scenario, points


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def sku_measurement(points: list[SweepPoint], df: pd.DataFrame, batch: BatchSweep,
                    precision: dict[str, PrecisionEntry], sku: str, gpu: str | None, source: str) -> SkuMeasurement:
    """The figures per precision from a sweep's analysis (analysis/selection.py: points_frame,
    batch_sweep, precision_sweep)."""
    by_key = {(p.config, p.level): p for p in points}
    ok = df[(df.status == "ok") & df.batch.notna()]
    rows = {(r.config, r.level): r for r in ok.itertuples()}
    out: dict[str, PrecisionMeasurement] = {}
    for p, knee in batch.by_precision.items():
        pts = sorted(knee.points, key=lambda x: x["batch"])
        if not pts:
            continue
        by_batch = {float(x["batch"]): (_num(x["output_token_throughput"]),
                                        _num(rows[(x["config"], x["level"])].ttft_p50_ms),
                                        f"{x['config']}/{x['level']}") for x in pts}
        kb = knee.knee_batch_size
        kp = next((x for x in pts if x["batch"] == kb), pts[-1])
        krow = rows[(kp["config"], kp["level"])]
        # TPOT at the smallest batch: the knee's configuration when it ran that batch.
        smallest = ok[(ok.precision == p) & (ok.batch == pts[0]["batch"])]
        same = smallest[smallest.config == kp["config"]]
        trow = (same if len(same) else smallest.sort_values("output_token_throughput")).iloc[-1]
        knee_point = by_key[(kp["config"], kp["level"])]
        tele, server = knee_point.server_telemetry, knee_point.server_record
        out[p] = PrecisionMeasurement(
            precision=p, knee_batch=_num(kb), knee_reached=knee.knee_reached,
            knee_point=f"{kp['config']}/{kp['level']}",
            output_tok_s_at_knee=_num(kp["output_token_throughput"]), ttft_p50_ms_at_knee=_num(krow.ttft_p50_ms),
            tpot_batch=_num(trow.batch), tpot_point=f"{trow.config}/{trow.level}",
            tpot_p50_ms_c1=_num(trow.tpot_p50_ms),
            # Telemetry always has these keys, None when its window held no sample: the server's
            # start-up figure stands in then.
            kv_pool_tokens=_num(_first(tele.kv_pool_tokens, server.kv_pool_tokens)),
            kv_pool_bytes=_num(_first(tele.kv_pool_bytes, server.kv_pool_bytes)),
            memory_fraction=_num(krow.memory_fraction), device_mem_total_bytes=_num(tele.device_mem_total_bytes),
            preference_throughput=_num(precision[p].throughput if p in precision else None),
            by_batch=by_batch,
        )
    return SkuMeasurement(sku=sku, source=source, gpu_name=gpu, by_precision=out)


def load_measurement(results_dir: Path) -> SkuMeasurement:
    """A sweep directory's measurement; a ReportError when it holds no GPU servesweep knows."""
    scenario, points = read_sweep(results_dir)
    gpu = gpu_name(points)
    sku = sku_from_gpu_name(gpu)
    if sku is None:
        raise ReportError(f"{results_dir} was measured on {gpu or 'no GPU (CPU)'}: not a GPU SKU servesweep has "
                          "datasheet figures for")
    df = points_frame(points, scenario.slo)
    meas = sku_measurement(points, df, batch_sweep(df), precision_sweep(df), sku, gpu,
                           display_path(results_dir / POINTS_FILE))
    if not meas.by_precision:
        raise ReportError(f"{results_dir} has no successful point with a batch size to take figures from")
    return meas
