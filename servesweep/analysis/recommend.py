"""A sweep's results directory to the content of `recommendation.json`: the points, drift, the
accuracy gate and the verification read back and analysed (analysis/selection.py). The report
(reports/render.py) draws it; the verification and the commands call `analyse` without drawing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from pydantic import ValidationError

from servesweep import __version__
from servesweep.errors import ReportError
from servesweep.analysis.selection import (
    GIB,
    PRECISION_ORDER,
    apply_headroom,
    apply_verification,
    batch_sweep,
    combined_sweep,
    gate_exclusions,
    gate_passed_by_precision,
    no_recommendation,
    points_frame,
    precision_sweep,
    production_recommendation,
)
from servesweep.analysis.drift_scores import compare_outputs
from servesweep.files import display_path
from servesweep.analysis.measurement import gpu_name as _gpu_name, load_measurement, read_sweep, sku_measurement
from servesweep.analysis.uncertainty import recommendation_uncertainty
from servesweep.analysis.skus import sku_from_gpu_name, sku_table
from servesweep.results import GATE_UNDER_LOAD_FILE, SweepPoint, dummy_weights
from servesweep.results.recommendation import (
    RECOMMENDATION_SCHEMA_VERSION,
    DriftScores,
    GateEntry,
    ModelSource,
    ProductionRecommendation,
    Recommendation,
)
from servesweep.results.report_inputs import (
    REPORT_INPUTS_FILE,
    ReportInputs,
    build_report_inputs,
    write_report_inputs,
)
from servesweep.results.sweep_files import DRIFT_FILE, ModelRecord, ProvenanceSource, read_drift, read_model_record
from servesweep.results.headroom import HEADROOM_FILE, read_headroom
from servesweep.results.verification import VERIFICATION_FILE, read_verification


def _drift_by_precision(out_dir: Path) -> dict[str, DriftScores]:
    runs: dict[str, list] = {}
    for path in sorted((out_dir / "configs").glob(f"*/{DRIFT_FILE}")):
        drift = read_drift(path)
        runs.setdefault(drift.precision, drift.outputs)
    present = [p for p in PRECISION_ORDER if p in runs]
    if len(present) < 2:
        return {}
    reference = present[0]
    result = {}
    for p in present:
        result[p] = DriftScores.model_validate(compare_outputs(runs[reference], runs[p]) | {"reference": reference})
    return result


def _read_optional(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def model_source(out_dir: Path, points: list[SweepPoint]) -> ModelSource:
    """Which model, and which weights, a sweep's numbers come from: dummy (random) weights say
    nothing about quality, so every quality figure names its source. `model.json` is what the
    sweep wrote about the model directory (servesweep's own training record, when it trained it)."""
    spec = next((p.config_spec for p in points if p.config_spec), None) or {}
    stored = read_model_record(out_dir) or ModelRecord()
    training, provenance = stored.training, stored.provenance
    dummy = bool(dummy_weights(spec))
    if dummy:
        weights = "dummy (random) weights"
    elif provenance:
        source = provenance.source or ProvenanceSource()
        weights = (f"{provenance.model}, real trained weights ({source.package} {source.version}, "
                   f"GGUF sha256 {str(source.gguf_sha256)[:12]}; {provenance.note})")
    elif training:
        shape = training.recipe.shape if training.recipe else None
        weights = (f"trained by servesweep ({shape.num_hidden_layers} layers, hidden "
                   f"{shape.hidden_size}, {training.train_tokens:,} training tokens)"
                   if shape and training.train_tokens else "trained by servesweep")
    else:
        weights = "weights from the model directory"
    return ModelSource(model=spec.get("model") or stored.path, weights=weights, dummy=dummy,
                       results=display_path(out_dir))


# Scenario keys that must match for another SKU's sweep (`--measured`) to be comparable; the
# precision grid (`sweep`) may differ.
SAME_WORKLOAD_KEYS = ("max_model_len", "workload", "load", "slo")


def stored_report_inputs(out_dir: Path, quality: bool = True, measured: bool = True) -> tuple[Path | None, list[Path]]:
    """The other sweeps a report of `out_dir` was last made with (`--quality-from`, `--measured`),
    so that a later `servesweep report DIR`, `capacity` or the verification's re-analysis keeps them.
    Paths are stored relative to `out_dir`; one that no longer leads to a directory (a folder moved
    without the others) is a ReportError naming the file, not a silent drop of those figures."""
    path = out_dir / REPORT_INPUTS_FILE
    if not (quality or measured):
        return None, []
    try:
        data = _read_optional(path) or {}
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} cannot be read: {exc}; delete it or run `servesweep report` with "
                          "--quality-from/--measured again") from None
    want_quality, want_measured = quality, measured  # the stored values not about to be replaced
    try:
        stored = ReportInputs.model_validate(data)
    except ValidationError:
        raise ReportError(f"{path} is not a report-inputs file (quality_from: a path or null, measured: a list of "
                          "paths); delete it or run `servesweep report` with --quality-from/--measured again") from None
    quality, measured = stored.quality_from, stored.measured

    def resolve(rel: str, option: str) -> Path:
        where = Path(os.path.normpath(out_dir / rel))
        if not where.is_dir():
            raise ReportError(f"{path} names {rel} ({option}), which is no directory from {out_dir} ({where}): move "
                              f"the folders together, or run `servesweep report {out_dir}` with {option} again")
        return where

    return ((resolve(quality, "--quality-from") if quality and want_quality else None),
            [resolve(m, "--measured") for m in measured] if want_measured else [])


def report_inputs(out_dir: Path, quality_dir: Path | None,
                  measured: Sequence[Path]) -> tuple[Path | None, list[Path]]:
    """The other sweeps to use: each option given replaces its own stored value, an option not
    given keeps the stored one (`--measured` does not drop an earlier `--quality-from`). Delete
    `report-inputs.json` to report the sweep alone again."""
    stored_quality, stored_measured = stored_report_inputs(out_dir, quality=quality_dir is None,
                                                           measured=not measured)
    return (quality_dir if quality_dir is not None else stored_quality,
            list(measured) if measured else stored_measured)


def store_report_inputs(out_dir: Path, quality_dir: Path | None, measured: Sequence[Path]) -> None:
    def relative(p: Path) -> str:  # relative, so the folders can move together (e.g. into examples/)
        return os.path.relpath(Path(p).resolve(), out_dir.resolve())

    write_report_inputs(out_dir, build_report_inputs(relative(quality_dir) if quality_dir else None,
                                                     [relative(m) for m in measured]))


@dataclass(frozen=True, slots=True)
class SweepAnalysis:
    """A sweep's points analysed, before the runs that follow the sweep are folded in: the
    recommendation says which point to verify; `with_runs` adds what its verification and headroom
    measured. One per command, passed on, so the sweep, its verification and its report decide on
    the same analysis."""

    frame: pd.DataFrame
    recommendation: Recommendation

    def with_runs(self, out_dir: Path) -> tuple[pd.DataFrame, Recommendation]:
        """(the points' frame, the recommendation with `out_dir`'s verification.json and
        headroom.json folded in); this analysis is left as it was."""
        result = self.recommendation.model_copy(deep=True)
        rec = result.production_recommendation
        if rec is not None:
            apply_verification(rec, read_verification(out_dir / VERIFICATION_FILE))
            apply_headroom(rec, read_headroom(out_dir / HEADROOM_FILE))
        return self.frame, result


def analyse(out_dir: Path, quality_dir: Path | None = None,
            measured_elsewhere: Sequence[Path] = ()) -> tuple[pd.DataFrame, Recommendation]:
    """The recommendation from a sweep, its verification and headroom included (analyse_sweep)."""
    return analyse_sweep(out_dir, quality_dir, measured_elsewhere).with_runs(out_dir)


def analyse_sweep(out_dir: Path, quality_dir: Path | None = None,
                  measured_elsewhere: Sequence[Path] = ()) -> SweepAnalysis:
    """The recommendation from a sweep's points. With `quality_dir` (another sweep, e.g. of a model
    with trained weights), drift and the accuracy gate come from that sweep instead, and `models`
    says which model each kind of figure comes from. `measured_elsewhere`: sweeps of the same
    scenario on other GPUs; each one's SKU is marked measured in the SKU table, with its own figures
    (this sweep's accuracy gate, if any, applies to them too)."""
    scenario, points = read_sweep(out_dir)
    quality_dir, measured_elsewhere = report_inputs(out_dir, quality_dir, measured_elsewhere)
    if quality_dir is not None and quality_dir.resolve() == out_dir.resolve():
        quality_dir = None  # `--quality-from` this very sweep: its own drift and gate, labelled "the same sweep"
    quality_root = quality_dir or out_dir
    quality_points = read_sweep(quality_dir)[1] if quality_dir else points
    df = points_frame(points, scenario.slo)
    drift = _drift_by_precision(quality_root)
    budget = scenario.vram_budget_gib
    batch = batch_sweep(df)
    precision = precision_sweep(df, drift)
    gate = _accuracy_gate(quality_root)
    # A gate that could not be measured says nothing either way: it neither vetoes nor clears a
    # precision. Failing under load fails the gate as much as failing unloaded.
    gate_passed = gate_passed_by_precision(gate)
    combined = combined_sweep(df, budget * GIB if budget else None, gate_exclusions(gate))
    gpu_name = _gpu_name(points)
    measured_sku = sku_from_gpu_name(gpu_name)
    sku = measured_sku or (scenario.skus or [None])[0]
    rec = production_recommendation(df, combined, batch, sku, gpu_name)
    if rec is not None:
        point = next((p for p in points if p.config == rec.based_on.config
                      and p.level == rec.based_on.level), None)
        rec.uncertainty = recommendation_uncertainty(out_dir, point, scenario.slo, rec.based_on.config,
                                                     rec.based_on.level)
    measurements = []
    if measured_sku:
        measurements.append(sku_measurement(points, df, batch, precision, measured_sku, gpu_name,
                                            display_path(out_dir / "points.jsonl")))
    differences: dict[str, list[str]] = {}
    for other in measured_elsewhere:
        elsewhere = load_measurement(other)
        if any(m.sku == elsewhere.sku for m in measurements):
            raise ReportError(f"{other} was measured on {elsewhere.sku} too: one results directory per SKU")
        measurements.append(elsewhere)
        other_scenario = read_sweep(other)[0]
        # Figures of two SKUs sit side by side only as far as the workload was the same.
        differ = scenario.differences(other_scenario, SAME_WORKLOAD_KEYS)
        if differ:
            differences[f"{elsewhere.sku} ({display_path(other)})"] = differ
    need = float(df.memory_needed_bytes.dropna().max()) if df.memory_needed_bytes.notna().any() else None
    result = Recommendation(
        schema_version=RECOMMENDATION_SCHEMA_VERSION,
        generated_by=f"servesweep {__version__}",
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        scenario=scenario.name,
        measured_on=gpu_name or "CPU (vLLM CPU build; no GPU)",
        models={"throughput": model_source(out_dir, points), "quality": model_source(quality_root, quality_points)},
        batch_sweep=batch,
        precision_sweep=precision,
        drift=drift,
        combined_sweep=combined,
        production_recommendation=rec,
        **({"no_recommendation": no_recommendation(df, combined)} if rec is None else {}),
        sku_to_preferred_precision=sku_table(measurements, need, gate_passed, scenario.skus,
                                             _recommended_on(measured_sku, rec)),
        **({"sku_table_scenario_differences": differences} if differences else {}),
        **({"accuracy_gate": gate} if gate else {}),
    )
    return SweepAnalysis(df, result)


def _recommended_on(sku: str | None, rec: ProductionRecommendation | None) -> tuple[str, str, str] | None:
    """The measured SKU's production recommendation, for its SKU-table entry."""
    if sku is None or rec is None:
        return None
    tok_s = rec.expected.get("output_token_throughput")
    at = f", {tok_s:,.0f} output tok/s" if isinstance(tok_s, (int, float)) else ""
    return sku, rec.precision, (f"the production recommendation ({rec.precision} at concurrency {rec.concurrency}{at} "
                                "within the SLOs, every measured point weighed)")


# What recommendation.json's accuracy_gate entries take from gate-under-load.json, under these names.
UNDER_LOAD_FIELDS = {"status": "status_under_load", "passed": "passed_under_load", "value": "value_under_load",
                     "reference_value": "reference_value_under_load", "message": "message_under_load",
                     "load": "load_under_load"}


def _accuracy_gate(out_dir: Path) -> list[GateEntry] | None:
    """One entry per configuration with a gate verdict: its gate.json (unloaded) and, when the spec
    measured under load, its gate-under-load.json folded in under UNDER_LOAD_FIELDS'
    names; the per-sample measurements stay in the files."""
    dirs = sorted({p.parent for p in out_dir.glob("**/gate.json")}
                  | {p.parent for p in out_dir.glob(f"**/{GATE_UNDER_LOAD_FILE}")})
    results = []
    for d in dirs:
        under = _read_optional(d / GATE_UNDER_LOAD_FILE)
        if (d / "gate.json").exists():
            data = json.loads((d / "gate.json").read_text())
            data["file"] = str((d / "gate.json").relative_to(out_dir))
        else:  # only the measurement under load has a verdict
            data = {k: under.get(k) for k in ("metric", "threshold", "method", "precision")}
            data.update(status="error", passed=False, value=None, message="not measured: no unloaded measurement",
                        file=None)
        data.pop("measurement", None)
        data.pop("schema_version", None)  # gate.json's own; recommendation.json has its version
        if under is not None:
            data.update({name: under.get(key) for key, name in UNDER_LOAD_FIELDS.items()})
            data["file_under_load"] = str((d / GATE_UNDER_LOAD_FILE).relative_to(out_dir))
        results.append(GateEntry.model_validate(data))
    return results or None
