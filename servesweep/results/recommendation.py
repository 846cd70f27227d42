"""`recommendation.json`: what a sweep recommends, and the analysis behind it. Built by
servesweep.analysis.recommend.analyse (the one builder; analysis/selection.py computes the
sections), written by the report, read back through `Recommendation` (`read_recommendation`) by
the console banner, the sweep's verification and the CLI.

The sections of the analysis (batch_sweep, precision_sweep, drift, combined_sweep) are typed as
far as their readers go (BatchSweep, PrecisionEntry, DriftScores, CombinedSweep: the fields the
analysis and the report read; their per-point rows stay plain mappings, tables the report draws)
and keep their key order; sku_to_preferred_precision stays a plain mapping. What readers decide on
is typed too: the recommendation itself, why there is none, the models the figures come from, the
accuracy gate's verdicts, the verification.

The recommendation names each knob twice: under servesweep's common name (`max_batch_size`,
`memory_fraction`) and under the server's own (`knobs` maps one to the other: vLLM's
max_num_seqs and gpu_memory_utilization, TensorRT-LLM's max_batch_size,
kv_cache_free_gpu_memory_fraction and kv_cache_config.max_tokens). The server's names are extra
keys; `server_knob` reads them.

Version history (`schema_version`):
  1  the only version so far. Files written before a field existed load without it: `models`,
     `accuracy_gate`, `server_kind` (then "vllm"), `knobs` (then vLLM's names), `verification`,
     `headroom`, `oom_margin_sized_for_pct`, `oom_margin_meaning`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from servesweep.results.io import Number, OpenModel, OrderedModel, read_result_file, write_json
from servesweep.results.points import KIND_BEFORE_RECORDED, knob_names
from servesweep.results.headroom import Headroom
from servesweep.results.verification import Verification

RECOMMENDATION_FILE = "recommendation.json"
RECOMMENDATION_SCHEMA_VERSION = 1


class Knee(OrderedModel):
    """`batch_sweep.by_precision[p]`: one precision's knee (analysis/knee.py find_knee) and the
    best point at each batch size behind it (`points`: batch, config, level, throughputs)."""

    knee_batch_size: Number | None = None
    knee_reached: bool | None = None
    points: list[dict[str, Any]] = []


class BatchSweep(OrderedModel):
    """`batch_sweep`: throughput against batch size, the knee per precision and overall."""

    points: list[dict[str, Any]] = []
    knee_batch_size: Number | None = None
    knee_precision: str | None = None
    by_precision: dict[str, Knee] = {}
    definition: str | None = None


class DriftScores(OrderedModel):
    """`drift[p]`: a precision's greedy outputs against the reference precision's
    (analysis/drift_scores.py compare_outputs, and the reference it was compared with)."""

    token_agreement: Number | None = None
    logprob_cosine: Number | None = None
    high_cosine_divergence_example: dict[str, Any] | None = None
    reference: str | None = None


class PrecisionEntry(OrderedModel):
    """`precision_sweep[p]`: a precision's throughput at the largest batch every precision reached,
    against fp32's, with its drift scores."""

    batch: Number | None = None
    throughput: Number | None = None
    speedup_vs_fp32: Number | None = None
    token_agreement: Number | None = None
    logprob_cosine: Number | None = None
    drift_reference: str | None = None


class CombinedSweep(OrderedModel):
    """`combined_sweep`: every measured point with whether it meets the SLOs and fits the VRAM
    budget (`points`, rows of the table), the best of them, and what the budget and the accuracy
    gate excluded."""

    points: list[dict[str, Any]] = []
    best_config: dict[str, Any] | None = None
    speedup_vs_baseline: dict[str, Any] | None = None
    vram_budget_bytes: Number | None = None
    excluded_by_accuracy_gate: list[str] = []
    accuracy_gate_exclusions: dict[str, str] = {}


class BasedOn(BaseModel):
    config: str
    level: str
    points_compared: int | None = None


class ProductionRecommendation(OpenModel):
    """The configuration to deploy. Figures the analysis takes from the points table are `Any`:
    they may be numpy numbers or NaN, which the writer serializes as they are."""

    sku: str | None = None
    measured_on: str | None = None
    server_kind: str = KIND_BEFORE_RECORDED
    precision: str
    max_batch_size: int | None = None
    max_batch_size_source: str | None = None
    knee_batch_size: Any = None
    concurrency: int | None = None
    memory_fraction: float | None = None
    knobs: dict[str, str] = {}
    kv_cache_dtype: Any = None
    expected: dict[str, Any] = {}
    kv_cache_peak_bytes: Any = None
    # J per output token at the recommended point, from NVML power (reports.energy); None without a GPU.
    energy: dict[str, Any] | None = None
    oom_margin_pct: float | None = None
    oom_margin_band_pct: list[float] = []
    based_on: BasedOn
    in_band: bool | None = None
    direction: str | None = None
    advice: str | None = None
    # Set from the verification (analysis.selection.apply_verification).
    sweep_oom_margin_pct: float | None = None
    verified: bool = False
    verification: Verification | None = None
    kv_cache_memory_bytes: Any = None
    server_args: list[str] | None = None
    oom_margin_source: str | None = None
    # What oom_margin_pct is: the KV-pool headroom under the stress run, and the margin the sizing aimed at.
    oom_margin_sized_for_pct: float | None = None
    oom_margin_meaning: str | None = None
    traffic_oom_margin_pct: float | None = None
    # How far the verified configuration is from breaking (servesweep.results.headroom, headroom.json).
    headroom: Headroom | None = None
    # How sure the figures are (analysis.uncertainty.recommendation_uncertainty): intervals over repeats.
    uncertainty: dict[str, Any] | None = None

    def knob_names(self) -> dict[str, str]:
        """Common knob name -> the server's own (vLLM's names for files written before)."""
        return {**knob_names(None), **self.knobs}

    def server_knob(self, common: str) -> Any:
        """The value under the server's own name of a common knob (`max_batch_size`, ...)."""
        name = self.knob_names()[common]
        return getattr(self, name, None) if name in type(self).model_fields else (self.model_extra or {}).get(name)

    def set_server_knob(self, name: str, value: Any) -> None:
        """Set a knob under the server's own name (an extra key, or the common field of that name)."""
        setattr(self, name, value)


class NoRecommendation(OpenModel):
    reason: str
    detail: list[str] = []


class ModelSource(OpenModel):
    """Which model, and which weights, a kind of figure comes from."""

    model: str | None = None
    weights: str | None = None
    dummy: bool = False
    results: str | None = None


class GateEntry(OpenModel):
    """One configuration's accuracy-gate verdicts: its gate.json (unloaded) and, when measured,
    its gate-under-load.json folded in under the `*_under_load` names."""

    precision: str | None = None
    metric: str | None = None
    status: str | None = None
    passed: bool | None = None
    value: float | None = None
    reference_value: float | None = None
    message: str | None = None
    threshold: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    file: str | None = None
    status_under_load: str | None = None
    passed_under_load: bool | None = None
    value_under_load: float | None = None
    reference_value_under_load: float | None = None
    message_under_load: str | None = None
    load_under_load: dict[str, Any] | None = None
    file_under_load: str | None = None


class Recommendation(OpenModel):
    """`recommendation.json` (see the module docstring)."""

    schema_version: int = RECOMMENDATION_SCHEMA_VERSION
    generated_by: str | None = None
    generated_at: str | None = None
    scenario: str | None = None
    measured_on: str | None = None
    models: dict[str, ModelSource] = {}
    batch_sweep: BatchSweep = BatchSweep()
    precision_sweep: dict[str, PrecisionEntry] = {}
    drift: dict[str, DriftScores] = {}
    combined_sweep: CombinedSweep = CombinedSweep()
    production_recommendation: ProductionRecommendation | None = None
    no_recommendation: NoRecommendation | None = None
    sku_to_preferred_precision: dict[str, Any] = {}
    sku_table_scenario_differences: dict[str, list[str]] | None = None
    accuracy_gate: list[GateEntry] | None = None


def read_recommendation(path: Path) -> Recommendation:
    return read_result_file(path, Recommendation, RECOMMENDATION_SCHEMA_VERSION,
                            "delete it and run `servesweep report` on the directory to write it anew")


def write_recommendation(path: Path, recommendation: Recommendation) -> None:
    write_json(path, recommendation.to_file())
