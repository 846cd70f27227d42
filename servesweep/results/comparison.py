"""`comparison.json`: `servesweep compare A B`, per matched level (or sweep point) and metric the
difference B - A, its Welch interval over the repeats and a verdict; written by
reports.compare (`compare`, the one builder) and read back through `Comparison`.

Version history (`schema_version`):
  1  the only version so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from servesweep.results.io import OpenModel, read_json_file, write_json

COMPARISON_FILE = "comparison.json"
COMPARISON_SCHEMA_VERSION = 1

Verdict = Literal["better", "worse", "no detectable difference", "no interval", "not measured"]


class MetricDelta(BaseModel):
    """One metric of one matched pair: B's mean minus A's, relative to A's mean, and its interval."""

    metric: str  # key in ci95: output_tok_s, goodput, ttft_ms.p99, ...
    name: str  # as printed: "TTFT p99 ms"
    higher_is_better: bool
    a_values: list[float]
    b_values: list[float]
    a_mean: float | None = None
    b_mean: float | None = None
    diff: float | None = None  # b_mean - a_mean
    low: float | None = None  # the interval of diff
    high: float | None = None
    change_pct: float | None = None  # diff / a_mean x 100
    low_pct: float | None = None
    high_pct: float | None = None
    df: float | None = None  # Welch's degrees of freedom
    verdict: Verdict
    why: str  # the verdict in words: the interval, or why there is none
    regression: bool = False  # worse, by at least --fail-on-regression


class PairComparison(BaseModel):
    """A level (run) or a configuration/level (sweep) of A set against its match in B."""

    a: str
    b: str
    metrics: list[MetricDelta]


class Comparison(OpenModel):
    schema_version: int = COMPARISON_SCHEMA_VERSION
    a: str  # as given on the command line
    b: str
    confidence: float
    method: str
    pairs: list[PairComparison]
    warnings: list[str] = []  # workloads, servers, hardware or SLOs that differ; suspect timings
    fail_on_regression_pct: float | None = None
    gate: Literal["pass", "fail", "not judged"] | None = None  # only with --fail-on-regression
    gate_detail: str | None = None


def write_comparison(out_dir: Path, comparison: Comparison) -> Path:
    path = out_dir / COMPARISON_FILE
    write_json(path, comparison.to_file())
    return path


def read_comparison(path: Path) -> Comparison:
    return Comparison.model_validate(read_json_file(path))
