"""`verification.json`: the verification run of a sweep's recommendation (servesweep.sweep.verify_run
writes it after every attempt; the report folds it into recommendation.json's
`production_recommendation.verification`). One model, `Verification`, for the file and that copy.

Version history (`schema_version`):
  1  files written before the field existed (no `schema_version`) are version 1: the same fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from servesweep.results.io import Number, OpenModel, OrderedModel, read_result_file, write_json

VERIFICATION_FILE = "verification.json"
VERIFICATION_SCHEMA_VERSION = 1


class Check(BaseModel):
    """One check of one run of an attempt (servesweep.sweep.verify_plan.judge)."""

    run: str  # "traffic" or "stress"
    check: str  # "failures", "preemptions", "margin", "slo"
    ok: bool
    detail: str


class AttemptSizingInputs(OrderedModel):
    """What an attempt's sizing was computed from (servesweep.sweep.sizing.SizingInputs): the
    fields readers of the file use; the rest is kept as written."""

    block_size: int | None = None  # tokens per KV block


class AttemptSizing(OrderedModel):
    """The sizing an attempt ran with (servesweep.sweep.sizing.Sizing.to_dict): the fields readers
    of the file use; the rest (the arithmetic's intermediate figures) is kept as written. Its
    `knobs` and `flags` are the backend's own."""

    kv_cache_memory_bytes: int | None = None
    kv_blocks: int | None = None
    max_num_seqs: int | None = None
    kind: str | None = None  # the server's backend; files written before backends owned their knobs lack it
    knobs: dict[str, Any] = {}
    flags: list[str] = []
    config_update: dict[str, Any] = {}  # the server configuration's fields for a relaunch at this sizing
    memory_fraction: Number | None = None
    gpu_memory_utilization: Number | None = None  # memory_fraction, in files written before backends owned their knobs
    target_source: str | None = None
    expected_margin_pct: Number | None = None
    change: str | None = None
    inputs: AttemptSizingInputs = AttemptSizingInputs()

    @property
    def fraction(self) -> Number | None:
        """The equivalent memory fraction as the server's backend computed it, under either name."""
        return self.memory_fraction if "memory_fraction" in self.model_fields_set else self.gpu_memory_utilization


class AttemptRun(OrderedModel):
    """One run of an attempt (traffic or stress: servesweep.sweep.observation.Observation.to_dict):
    the fields readers of the file use; the rest is kept as written."""

    request_rate: Number | None = None
    ttft_ms: Number | None = None
    tpot_ms: Number | None = None
    percentile: int = 99
    failed: int | None = None
    preemptions: int | None = None
    oom_margin_pct: Number | None = None


class Attempt(OpenModel):
    """One verification attempt: the sizing it ran with, both runs' figures, the verdict."""

    sizing: AttemptSizing
    traffic: AttemptRun
    stress: AttemptRun
    passed: bool
    reasons: list[str]
    checks: list[Check]


class Verification(OpenModel):
    """`verification.json`, and `verification` in recommendation.json's recommendation.

    finished   false while attempts are still to come (a rerun resumes after the last one)
    skipped    why nothing was verified (no recommendation, a sizing that cannot be made, --no-verify)
    stale      a verification of another point than the recommendation now names (the report's copy)
    """

    schema_version: int = VERIFICATION_SCHEMA_VERSION
    finished: bool = False
    config: str | None = None
    level: str | None = None
    passed: bool = False
    skipped: str | None = None
    reason: str | None = None
    server_config: dict[str, Any] | None = None
    attempts: list[Attempt] = []
    command: list[str] | str | None = None  # the server command line of the last attempt, from the caller
    plan: dict[str, Any] | None = None
    stale: dict[str, Any] | None = None

    def add(self, attempt: Attempt) -> None:
        """Record an attempt; the verification passes when its latest attempt did. (Assigned, not
        appended, so `to_file` counts the fields as set.)"""
        self.attempts = [*self.attempts, attempt]
        self.passed = attempt.passed

    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


def new_verification(**fields: Any) -> Verification:
    """A verification with the schema version set, so the file names it."""
    return Verification(schema_version=VERIFICATION_SCHEMA_VERSION, **fields)


def read_verification(path: Path) -> Verification | None:
    """The stored verification, or None when there is none."""
    return read_result_file(path, Verification, VERIFICATION_SCHEMA_VERSION, "delete it and run the same `servesweep sweep` again to rebuild it (finished points are kept)") if path.exists() else None


def write_verification(path: Path, verification: Verification) -> None:
    write_json(path, verification.to_file())
