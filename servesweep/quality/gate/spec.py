"""The accuracy gate's spec: which metric, how much regression is allowed, how it is measured.

    accuracy_gate:
      metric: perplexity            # perplexity | exact_match | greedy_agreement
      threshold:
        max_relative_increase: 0.02 # perplexity may rise at most 2 % over the reference
      method:
        eval_set: evalsets/stdlib-heldout-perplexity.jsonl   # relative to the spec file
        eval_set_sha256: 063e54eb...
        samples: 64
        reference_precision: fp32
        seed: 0
      under_load: true              # optional; see below

Each metric takes exactly one threshold key:
  perplexity        max_relative_increase  value <= reference x (1 + t)
  exact_match       max_drop_points        accuracy (%) >= reference (%) - t
                    (+ paired_alpha: a)     and, when set, not significantly worse task by task: the
                                            candidate fails when it loses more of the reference's
                                            tasks than it gains beyond chance (one-sided exact
                                            McNemar p < a): a real regression under the limit
  greedy_agreement  min_agreement          share of greedy tokens equal to the reference's >= t

Quality under load (`under_load`): batching changes numerics, so a precision can pass alone and
regress under concurrency. With `under_load` set, a sweep measures the metric a second time on
each configuration while a load runs against the same server (servesweep.quality.gate.under_load)
and judges that value against the reference precision's UNLOADED measurement, with the same
threshold; a precision that fails either verdict fails the gate. Forms:
  under_load: false               (default) measured unloaded only
  under_load: true                at the configuration's recommended load: the adaptive search's
                                  recommended concurrency (`concurrency: auto`) or best rate
                                  (`request_rate: auto`); with fixed levels, the level with the best
                                  goodput (request throughput without SLOs) among its ok points,
                                  points that meet the SLOs without failed requests first
  under_load: {concurrency: 8}    at this closed-loop concurrency on every configuration
The load is the scenario's workload. `servesweep gate` measures under load with --under-load N
(or the spec's `concurrency`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from servesweep.errors import ConfigError, validation_message
from servesweep.precision import PrecisionName
from servesweep.files import display_path, read_yaml_file
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

Metric = Literal["perplexity", "exact_match", "greedy_agreement"]
THRESHOLD_KEY: dict[str, str] = {
    "perplexity": "max_relative_increase",
    "exact_match": "max_drop_points",
    "greedy_agreement": "min_agreement",
}


class GateSpecError(ConfigError):
    """The spec or its eval set cannot be used; the message names the file and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(Strict):
    max_relative_increase: float | None = Field(default=None, ge=0)
    max_drop_points: float | None = Field(default=None, ge=0, le=100)
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    # exact_match only, beside max_drop_points: both runs answer the same tasks, so the flips tell a
    # real loss from rounding noise that the fixed limit cannot (SmolLM2's fp8 on an H100 lost 11 tasks
    # and gained 2: -5.0 points, at the limit, p 0.011).
    paired_alpha: float | None = Field(default=None, gt=0, lt=1)

    def only_key(self) -> str | None:
        keys = [k for k, v in self.model_dump().items() if v is not None and k != "paired_alpha"]
        return keys[0] if len(keys) == 1 else None


class Decoding(Strict):
    """Generation parameters for exact_match and greedy_agreement (perplexity generates nothing)."""

    temperature: float = 0.0
    max_tokens: int = Field(default=32, ge=1)
    stop: list[str] = []


class Method(Strict):
    eval_set: Path  # absolute once loaded (load_gate_spec); written relative to the working directory

    @field_serializer("eval_set")
    def _portable(self, path: Path) -> str:
        # A result file names the eval set the way a clone of the repository can find it, not by the
        # path of the machine that measured (issue 36); its sha256 pins the content.
        return display_path(path)

    eval_set_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    samples: int | None = Field(default=None, ge=1, description="first N samples after a seeded shuffle; all when unset")
    reference_precision: PrecisionName = "fp32"
    decoding: Decoding = Field(default_factory=Decoding)
    seed: int = 0


class UnderLoad(Strict):
    """`under_load: {concurrency: N}`; concurrency None: the configuration's recommended load."""

    concurrency: int | None = Field(default=None, ge=1, strict=True)


class GateSpec(Strict):
    metric: Metric
    threshold: Threshold
    method: Method
    # None: unloaded only. `true` in the file reads as UnderLoad() (the recommended load).
    under_load: UnderLoad | None = None

    @field_validator("under_load", mode="before")
    @classmethod
    def _under_load_forms(cls, value: Any) -> Any:
        if value is True:
            return UnderLoad()
        if value is False or value is None:
            return None
        if isinstance(value, dict):
            return value
        raise ValueError(f"expected true, false or {{concurrency: N}}, got {value!r}")

    @model_validator(mode="after")
    def _threshold_matches_metric(self) -> "GateSpec":
        want = THRESHOLD_KEY[self.metric]
        if self.threshold.only_key() != want:
            raise ValueError(f"metric {self.metric} takes exactly one threshold key, {want}")
        if self.threshold.paired_alpha is not None and self.metric != "exact_match":
            raise ValueError("paired_alpha goes with exact_match (max_drop_points) only")
        return self

    @property
    def threshold_value(self) -> float:
        return getattr(self.threshold, THRESHOLD_KEY[self.metric])

    def fingerprint(self) -> dict[str, Any]:
        """What two measurements must share to be comparable."""
        return {"metric": self.metric, "eval_set_sha256": self.method.eval_set_sha256,
                "samples": self.method.samples, "seed": self.method.seed,
                "decoding": None if self.metric == "perplexity" else self.method.decoding.model_dump()}


def load_gate_spec(path: str | Path) -> GateSpec:
    """Read a spec (YAML or JSON, with or without the `accuracy_gate:` wrapper); eval_set is resolved
    against the spec's folder."""
    path = Path(path)
    raw = read_yaml_file(path, "gate spec", GateSpecError)
    if isinstance(raw, dict) and "accuracy_gate" in raw:
        raw = raw["accuracy_gate"]
    if not isinstance(raw, dict):
        raise GateSpecError(f"gate spec {path}: expected a mapping with metric, threshold and method")
    try:
        spec = GateSpec.model_validate(raw)
    except ValidationError as exc:
        raise GateSpecError(f"gate spec {path}: {validation_message(exc, '(top level)')}") from None
    if not spec.method.eval_set.is_absolute():
        spec.method.eval_set = (path.parent / spec.method.eval_set).resolve()
    return spec


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_eval_set(spec: GateSpec) -> list[dict[str, Any]]:
    """The samples the gate measures, after checking the file is the one the spec pins."""
    import numpy as np

    path = spec.method.eval_set
    if not path.exists():
        raise GateSpecError(f"eval set {path} does not exist")
    digest = file_sha256(path)
    if digest != spec.method.eval_set_sha256:
        raise GateSpecError(f"eval set {path} has sha256 {digest}, but the spec pins "
                            f"{spec.method.eval_set_sha256}: the eval set changed, so results are not "
                            "comparable with the reference; restore the file or update the spec's hash deliberately")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GateSpecError(f"eval set {path}:{n}: not valid JSON: {exc}") from None
        need = ("text",) if spec.metric == "perplexity" else ("prompt", "answer") if spec.metric == "exact_match" \
            else ("prompt",)
        missing = [k for k in need if not isinstance(row.get(k), str)]
        if missing:
            raise GateSpecError(f"eval set {path}:{n}: metric {spec.metric} needs string field(s) {missing}")
        rows.append(row)
    if not rows:
        raise GateSpecError(f"eval set {path} is empty")
    order = np.random.default_rng(spec.method.seed).permutation(len(rows))
    chosen = [rows[i] for i in order]
    if spec.method.samples is not None:
        if spec.method.samples > len(rows):
            raise GateSpecError(f"method.samples is {spec.method.samples} but eval set {path} has {len(rows)}")
        chosen = chosen[: spec.method.samples]
    return chosen
