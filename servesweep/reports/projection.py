"""Predictions of one GPU SKU's figures from another SKU's measured sweep, written down before the
target is measured, and their comparison with that measurement once it exists.

prediction (a .json and a .md beside it): the target SKU; per precision and metric (analysis/skus.py
METRICS) the projected figure, each naming its rule and source, beside the measured figure it
came from; the rules' text; provenance: the result files read (path, sha256), servesweep's
version, the time it was made, the scenario's workload, and the notes given.

comparison: per precision and metric, predicted, measured, and error % = (predicted - measured)
/ measured x 100, flagged when |error| > ERROR_THRESHOLD_PCT. A figure taken at the knee
refers to the measured SKU's knee batch; when the target's knee is elsewhere the row says so and
adds the target's value at the predicted batch, so an error of the rule and a move of the knee
are told apart. Conditions that differ between the two sweeps (workload, load, memory fraction)
are listed: a figure compared across them is not a test of the rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from servesweep import __version__
from servesweep.errors import ConfigError, OutputError, validation_message
from servesweep.files import display_path
from servesweep.analysis.measurement import load_measurement, read_sweep
from servesweep.analysis.skus import METRICS, RULES_FILE_CITED, SKUS, Figure, current_rules, datasheet, measured_figures, project
from servesweep.results import POINTS_FILE, OpenModel, dummy_weights, write_json

ERROR_THRESHOLD_PCT = 20.0
PREDICTION_SCHEMA_VERSION = 1
COMPARISON_SCHEMA_VERSION = 1
# Scenario fields that must match for a prediction to be a test of the rules (the model path may differ).
CONDITION_KEYS = ("served_model_name", "dummy_weights", "max_model_len", "workload", "load", "sweep")
KNEE_METRICS = ("output_tok_s_at_knee", "ttft_p50_ms_at_knee")


class SourceFile(BaseModel):
    path: str
    sha256: str
    bytes: int


class Prediction(BaseModel):
    """prediction.json."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["servesweep-prediction"] = "servesweep-prediction"
    schema_version: int = PREDICTION_SCHEMA_VERSION
    basis: Literal["projected"] = "projected"
    target_sku: str
    measured_sku: str
    measured_on: str | None
    results_dir: str
    made_at: str
    generated_by: str
    source_files: list[SourceFile]
    scenario: dict[str, Any]
    datasheets: dict[str, dict[str, Any]]
    rules: dict[str, str]
    figures: dict[str, dict[str, Figure]]
    measured_figures: dict[str, dict[str, Figure]]
    memory_fractions: dict[str, float | None]  # per precision: the setting the KV pool figures are for
    notes: list[str] = []


class Comparison(OpenModel):
    """predicted_vs_measured.json: a prediction's figures against a sweep measured on its SKU
    (`compare` fills it; one row per precision x metric)."""

    kind: Literal["servesweep-projection-comparison"] = "servesweep-projection-comparison"
    schema_version: int = COMPARISON_SCHEMA_VERSION
    generated_by: str
    generated_at: str
    target_sku: str
    measured_on: str | None = None
    prediction: dict[str, Any]
    measured_files: list[dict[str, Any]]
    threshold_pct: float
    error_definition: str
    rows: list[dict[str, Any]]
    flagged: int
    conditions_differ: list[str] = []
    rules: Any = None


def resolve_sku(name: str) -> str:
    """A key of SKUS, matched without regard to case; a ConfigError naming the known ones otherwise."""
    found = {k.lower(): k for k in SKUS}.get(name.strip().lower())
    if found is None:
        raise ConfigError(f"unknown SKU {name!r}; known: {', '.join(SKUS)}")
    return found


def source_file(path: Path) -> SourceFile:
    data = path.read_bytes()
    return SourceFile(path=display_path(path), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def _conditions(scenario: dict[str, Any]) -> dict[str, Any]:
    # dummy_weights read as results.dummy_weights does, so files that say load_format still compare.
    return {**{k: scenario.get(k) for k in ("name", "model", *CONDITION_KEYS)}, "dummy_weights": dummy_weights(scenario)}


# Which precisions a sweep measures changes no measured configuration: a precision the measured sweep
# lacks shows as "not measured" in its own rows.
_NOT_A_CONDITION = {"sweep": {"precision"}}


def _differences(predicted: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """The conditions that differ, field by field. A field only one side has (one added to the scenario
    after the prediction was made, e.g. `stall_timeout_s`) is not a difference: the other side ran
    without the knob, at its default."""
    out: list[str] = []
    for key in CONDITION_KEYS:
        pred, meas = predicted.get(key), measured.get(key)
        if isinstance(pred, dict) and isinstance(meas, dict):
            skip = _NOT_A_CONDITION.get(key, set())
            out += [f"{key}.{k}: predicted from {pred[k]!r}, measured with {meas[k]!r}"
                    for k in sorted(pred.keys() & meas.keys() - skip) if pred[k] != meas[k]]
        elif pred != meas:
            out.append(f"{key}: predicted from {pred!r}, measured with {meas!r}")
    return out


def predict(results_dir: Path, target: str, notes: list[str] | None = None,
            now: dt.datetime | None = None) -> Prediction:
    """Project `results_dir`'s measured figures onto `target` (a SKU name)."""
    target = resolve_sku(target)
    scenario, _ = read_sweep(results_dir)
    meas = load_measurement(results_dir)
    if meas.sku == target:
        raise ConfigError(f"{results_dir} was measured on {target} itself: nothing to project")
    now = now or dt.datetime.now(dt.timezone.utc)
    return Prediction(
        target_sku=target, measured_sku=meas.sku, measured_on=meas.gpu_name, results_dir=display_path(results_dir),
        made_at=now.isoformat(timespec="seconds"), generated_by=f"servesweep {__version__}",
        source_files=[source_file(results_dir / name) for name in (POINTS_FILE, "scenario.json")],
        scenario=_conditions(scenario.to_file()),
        datasheets={name: datasheet(SKUS[name]) for name in (meas.sku, target)},
        rules=current_rules(),
        figures=project(meas, SKUS[target]), measured_figures=measured_figures(meas),
        memory_fractions={p: m.memory_fraction for p, m in meas.by_precision.items()}, notes=list(notes or []))


def read_prediction(path: Path) -> Prediction:
    try:
        return Prediction.model_validate(orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        raise ConfigError(f"prediction file {path} does not exist") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"prediction file {path} cannot be read: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a servesweep prediction: {validation_message(exc)}") from None


def _error_pct(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured * 100


def compare(prediction: Prediction, prediction_path: Path, measured_dir: Path) -> Comparison:
    """Predicted against measured, per precision and metric (see the module docstring)."""
    scenario, _ = read_sweep(measured_dir)
    meas = load_measurement(measured_dir)
    if meas.sku != prediction.target_sku:
        raise ConfigError(f"{prediction_path} predicts {prediction.target_sku}, but {measured_dir} was measured on "
                          f"{meas.gpu_name} ({meas.sku})")
    measured = measured_figures(meas)
    rows = []
    for precision, per in prediction.figures.items():
        for metric, fig in per.items():
            m = (measured.get(precision) or {}).get(metric)
            pm = meas.by_precision.get(precision)
            row: dict[str, Any] = {
                "precision": precision, "metric": metric, "words": METRICS[metric][1], "unit": fig.unit,
                "rule_id": fig.rule_id, "predicted": fig.value, "predicted_batch": fig.batch,
                "measured": m.value if m else None, "measured_batch": m.batch if m else None,
                "measured_source": m.source if m else None, "notes": [],
            }
            row["error_pct"] = _error_pct(row["predicted"], row["measured"])
            if m is None:
                row["notes"].append(f"{precision} not measured on {meas.sku}")
            elif metric in KNEE_METRICS and fig.batch is not None and m.batch != fig.batch and pm is not None:
                row["notes"].append(f"knee moved: predicted at {prediction.measured_sku}'s knee, batch {fig.batch:g}; "
                                    f"{meas.sku}'s knee is at batch {m.batch:g}")
                same = pm.by_batch.get(fig.batch)
                if same is not None:
                    value = same[0] if metric == "output_tok_s_at_knee" else same[1]
                    row["measured_at_predicted_batch"] = value
                    row["error_at_predicted_batch_pct"] = _error_pct(fig.value, value)
            elif metric == "tpot_p50_ms_c1" and m.batch != fig.batch:
                row["notes"].append(f"different smallest batch: predicted {fig.batch}, measured {m.batch}")
            if metric == "kv_pool_tokens" and pm is not None:
                predicted_fraction = prediction.memory_fractions.get(precision)
                if predicted_fraction is not None and pm.memory_fraction != predicted_fraction:
                    row["notes"].append(f"memory fraction differs: {predicted_fraction:g} vs {pm.memory_fraction}")
            if m is not None and m.note:
                row["notes"].append(f"measured: {m.note}")
            row["flagged"] = row["error_pct"] is not None and abs(row["error_pct"]) > ERROR_THRESHOLD_PCT
            rows.append(row)
    conditions = _conditions(scenario.to_file())
    predicted = _conditions(prediction.scenario)
    differ = _differences(predicted, conditions)
    return Comparison(
        kind="servesweep-projection-comparison", schema_version=COMPARISON_SCHEMA_VERSION,
        generated_by=f"servesweep {__version__}",
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        target_sku=prediction.target_sku, measured_on=meas.gpu_name,
        prediction={**source_file(prediction_path).model_dump(), "made_at": prediction.made_at,
                    "from": f"{prediction.measured_sku} ({prediction.results_dir})"},
        measured_files=[source_file(measured_dir / n).model_dump() for n in (POINTS_FILE, "scenario.json")],
        threshold_pct=ERROR_THRESHOLD_PCT,
        error_definition="(predicted - measured) / measured x 100",
        rows=rows,
        flagged=sum(r["flagged"] for r in rows),
        conditions_differ=differ,
        rules=prediction.rules,
    )


# --- documents -------------------------------------------------------------------------------------
def _v(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if unit in ("tok/s", "tokens") else f"{value:,.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]


def prediction_markdown(pred: Prediction, json_name: str) -> str:
    made = pred.made_at[:10]
    lines = [f"# Prediction: {pred.target_sku} from {pred.measured_sku} (projected, not measured)", "",
             f"Made on {made} ({pred.made_at}) from `{pred.results_dir}`, measured on {pred.measured_on}, "
             f"by {pred.generated_by}. Every {pred.target_sku} figure below is **projected, not measured**: the "
             f"{pred.measured_sku} figure times a datasheet ratio (rules below).", ""]
    if dummy_weights(pred.scenario):
        lines += [f"Model weights: **dummy** (dummy_weights; {pred.scenario.get('served_model_name')}): random "
                  "values in the model's shape. Speed depends on the shapes, not the values; no quality is measured.",
                  ""]
    if pred.notes:
        lines += ["Notes:", "", *[f"- {n}" for n in pred.notes], ""]
    rows = []
    for precision, per in pred.figures.items():
        for metric, fig in per.items():
            base = (pred.measured_figures.get(precision) or {}).get(metric)
            rows.append([precision, METRICS[metric][1], _v(base.value if base else None, fig.unit),
                         _v(fig.value, fig.unit), "-" if fig.batch is None else f"{fig.batch:g}",
                         fig.rule_id or "-", fig.applied or "-", fig.note or ""])
    lines += _table(["precision", "metric", f"{pred.measured_sku} measured", f"{pred.target_sku} projected", "batch",
                     "rule", "applied", "note"], rows)
    lines += ["", f"Rules ({RULES_FILE_CITED}; M measured, S projected):", "",
              *[f"- `{rid}`: {text}" for rid, text in pred.rules.items()], "",
              "Source files:", "", *[f"- `{f.path}` sha256 `{f.sha256}` ({f.bytes} bytes)" for f in pred.source_files],
              "", "Datasheets: " + "; ".join(d["source"] for d in pred.datasheets.values()) + ".", "",
              f"Compare with the measurement: `servesweep project --compare {json_name} RESULTS_DIR --out TABLE.json`.",
              ""]
    return "\n".join(lines)


def comparison_markdown(table: Comparison) -> str:
    p = table.prediction
    lines = [f"# Predicted vs measured: {table.target_sku}", "",
             f"Prediction: `{p['path']}` (sha256 `{p['sha256'][:16]}...`, made {p['made_at']} from {p['from']}). "
             f"Measured on {table.measured_on}: "
             + ", ".join(f"`{f['path']}`" for f in table.measured_files) + ".",
             "", f"Error = {table.error_definition}; flagged (!) when |error| > {table.threshold_pct:g} %.", ""]
    rows = []
    for r in table.rows:
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f} %"
        notes = list(r["notes"])
        if r.get("error_at_predicted_batch_pct") is not None:
            same = _v(r["measured_at_predicted_batch"], r["unit"])
            notes.append(f"at batch {r['predicted_batch']:g}: measured {same}, "
                         f"error {r['error_at_predicted_batch_pct']:+.1f} %")
        rows.append([r["precision"], r["words"], _v(r["predicted"], r["unit"]), _v(r["measured"], r["unit"]), err,
                     "!" if r["flagged"] else "", r["rule_id"] or "-", "; ".join(notes)])
    lines += _table(["precision", "metric", "predicted", "measured", "error", "flag", "rule", "notes"], rows)
    lines += ["", f"{table.flagged} of {len(table.rows)} figures off by more than {table.threshold_pct:g} %."]
    if table.conditions_differ:
        lines += ["", "Conditions that differ (figures compared across them do not test the rules):", "",
                  *[f"- {d}" for d in table.conditions_differ]]
    return "\n".join(lines) + "\n"


def _md_path(json_path: Path) -> Path:
    return json_path.with_suffix(".md")


def write_prediction(pred: Prediction, out: Path) -> tuple[Path, Path]:
    write_json(out, pred.model_dump(mode="json"))
    md = _md_path(out)
    _write_text(md, prediction_markdown(pred, out.name))
    return out, md


def write_comparison(table: Comparison, out: Path) -> tuple[Path, Path]:
    write_json(out, table.to_file())
    md = _md_path(out)
    _write_text(md, comparison_markdown(table))
    return out, md


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
