"""The sweep's smaller files, one model each: `model.json` (which model the sweep served, and how
servesweep trained it when it did), `configs/<config>/drift.json` (a configuration's greedy
answers to the drift prompts, compared across precisions by analysis/drift_scores.py) and
`scenario.json` (the scenario the sweep ran, as the Scenario model dumped it). The sweep writes
them (servesweep.sweep.sweep_runner); the report reads them through these models.

Version history (`schema_version`, model.json and drift.json):
  1  files written before the field existed are version 1: the same fields.
scenario.json has no version of its own: it is the Scenario model's dump, read through
`ScenarioRecord`, which names the fields the analysis uses and keeps the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from servesweep.results.io import Number, OpenModel, OrderedModel, read_result_file, write_json

MODEL_FILE = "model.json"
SCENARIO_FILE = "scenario.json"
DRIFT_FILE = "drift.json"
MODEL_SCHEMA_VERSION = 1
DRIFT_SCHEMA_VERSION = 1


class TrainingShape(OrderedModel):
    """The trained model's shape (servesweep.models' recipe): the fields the report names."""

    num_hidden_layers: int | None = None
    hidden_size: int | None = None


class TrainingRecipe(OrderedModel):
    shape: TrainingShape | None = None


class Training(OrderedModel):
    """`training` in model.json: servesweep's training record of the model it trained."""

    recipe: TrainingRecipe | None = None
    train_tokens: int | None = None


class ProvenanceSource(OrderedModel):
    """Where a published model's weights came from (servesweep.models.smollm2)."""

    package: str | None = None
    version: str | None = None
    gguf_sha256: str | None = None


class Provenance(OrderedModel):
    """`provenance` in model.json: how servesweep built the model from a published one."""

    model: str | None = None
    source: ProvenanceSource | None = None
    note: str | None = None


class ModelRecord(OpenModel):
    """`model.json`: the model directory and, when servesweep trained it, its training record
    (recipe, training tokens, held-out perplexity), or why that record could not be read; when
    servesweep built it from a published model (SmolLM2), its provenance: package, version, GGUF
    sha256, the quantization the weights went through."""

    schema_version: int = MODEL_SCHEMA_VERSION
    path: str | None = None
    training: Training | None = None
    training_record_error: str | None = None
    provenance: Provenance | None = None


class ScenarioRecord(OpenModel):
    """`scenario.json`: the scenario a sweep ran (servesweep.scenarios.schema.Scenario, dumped). The
    fields the analysis reads; the rest is kept. `workload`, `load` and `slo` stay as written: they
    are compared whole between two sweeps (SAME_WORKLOAD_KEYS in analysis/recommend.py)."""

    name: str | None = None
    max_model_len: int | None = None
    workload: Any = None
    load: Any = None
    slo: dict[str, Any] | None = None
    vram_budget_gib: Number | None = None
    skus: list[str] | None = None

    def differences(self, other: "ScenarioRecord", keys: tuple[str, ...]) -> list[str]:
        """Which of `keys` (fields of this model) the two scenarios give differently."""
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


class DriftRecord(OpenModel):
    """`drift.json`: one configuration's precision and its greedy outputs (tokens, top logprobs)."""

    schema_version: int = DRIFT_SCHEMA_VERSION
    precision: str
    outputs: list[dict[str, Any]]


def write_model_record(out_dir: Path, path: str, training: dict[str, Any] | None,
                       error: str | None = None, provenance: dict[str, Any] | None = None) -> None:
    record = ModelRecord(schema_version=MODEL_SCHEMA_VERSION, path=path, training=training)
    if provenance is not None:  # only set when there is one: the file keeps its earlier shape otherwise
        record.provenance = Provenance.model_validate(provenance)
    if error is not None:
        record.training_record_error = error
    write_json(out_dir / MODEL_FILE, record.to_file())


def read_model_record(out_dir: Path) -> ModelRecord | None:
    path = out_dir / MODEL_FILE
    return (read_result_file(path, ModelRecord, MODEL_SCHEMA_VERSION, "delete it (the report then names no model) "
                             "or run the same `servesweep sweep` again to write it anew") if path.exists() else None)


def write_drift(path: Path, precision: str, outputs: list[dict[str, Any]]) -> None:
    write_json(path, DriftRecord(schema_version=DRIFT_SCHEMA_VERSION, precision=precision, outputs=outputs).to_file())


def read_drift(path: Path) -> DriftRecord:
    return read_result_file(path, DriftRecord, DRIFT_SCHEMA_VERSION, "delete it and run the same `servesweep sweep` again to rebuild it (finished points are kept)")
