"""`headroom.json`: how far the verified configuration is from breaking, measured on its own server
(servesweep.sweep.headroom_run writes it after every step; the report folds it into recommendation.json's
`production_recommendation.headroom`). One model, `Headroom`, for the file and that copy.

Three margins, each named for what it is:
  load       `steps` and `onsets`: the offered load stepped up from the recommended one, open loop,
             until each onset (first preemption, KV use >= 95 %, the SLO percentile breached, the
             first failed request) is seen or the cap is reached; "not reached up to X" is an answer.
  length     `length_steps` and `length_onsets`: at the recommended load, every request made longer
             (both length distributions scaled) step by step until the first preemption or KV use
             >= 95 % is seen, measured; `tail`: the KV pool's preemption rate predicted from the length
             distribution, and the same rate measured over the verification's longer traffic run; the
             pool a target rate needs beside the one the p99 sizing gave.
  device     `device_memory`: the physical margin, NVML peak vs device total, apart from the KV pool.

Version history (`schema_version`):
  1  the first version.
  2  the length search: `length_factors`, `length_steps`, `length_onsets`, `length_stop_reason`
     (absent from version 1 files, which read with them empty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel

from servesweep.results.io import OpenModel, write_json

HEADROOM_FILE = "headroom.json"
HEADROOM_SCHEMA_VERSION = 2

OnsetKind = Literal["preemption", "kv_full", "slo", "failure"]
OnsetStatus = Literal["reached", "not_reached", "not_measured"]
LengthOnsetKind = Literal["preemption", "kv_full", "failure"]


class HeadroomStep(BaseModel):
    """One window of the load search: what was offered and what the server and the client saw."""

    factor: float  # offered rate / the recommended rate
    length_factor: float = 1.0  # every request's lengths x this (the length search; 1 in the load search)
    offered_rate: float  # requests/s offered (open loop)
    achieved_rate: float | None = None  # requests/s completed over the window
    completed: int = 0
    failed: int = 0
    ttft_ms: float | None = None  # at the SLO percentile
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    percentile: int = 99
    kv_peak_frac: float | None = None
    preemptions: int | None = None
    running_batch_peak: float | None = None
    waiting_peak: float | None = None
    slo_breaches: list[str] = []
    device_mem_peak_bytes: float | None = None
    device_mem_total_bytes: float | None = None
    dir: str | None = None  # the step's run directory, relative to the sweep's


class Onset(BaseModel):
    """Where one kind of trouble starts, as an offered load and as % above the recommended load."""

    kind: OnsetKind
    status: OnsetStatus
    offered_rate: float | None = None  # the first step where it was seen
    pct_above_recommended: float | None = None
    # The bracket it lies in: the last step without it and the first with it (offered req/s).
    interval: list[float] | None = None
    up_to_rate: float | None = None  # not reached: the highest offered load that ran
    up_to_pct: float | None = None
    basis: str  # what was measured, in words


class LengthOnset(BaseModel):
    """Where one kind of trouble starts as requests get longer at the recommended load."""

    kind: LengthOnsetKind
    status: OnsetStatus
    length_factor: float | None = None  # the first step where it was seen
    # The bracket it lies in: the last length factor without it and the first with it.
    interval: list[float] | None = None
    up_to_factor: float | None = None  # not reached: the longest requests that ran
    basis: str


class SizingOption(BaseModel):
    """A KV pool size and what it costs."""

    name: str
    kv_blocks: int  # to allocate (vLLM's null block included)
    kv_tokens: int
    kv_bytes: float | None
    predicted_preemptions_per_10k: float
    basis: str


class TailRisk(BaseModel):
    """The length tail against the KV pool: predicted vs measured preemption rate at the
    recommended load, and the pool a target rate needs (servesweep.sweep.kv_tail)."""

    status: Literal["measured", "not_measured"]
    reason: str | None = None
    concurrency: int | None = None
    pool_blocks: int | None = None  # the blocks requests can use (vLLM's pool less its null block)
    block_size: int | None = None
    prefill_steps: int | None = None  # decode steps a prompt is held before its first token
    predicted_preemptions_per_10k: float | None = None
    predicted_kv_tokens_per_request: float | None = None
    simulated_requests: int | None = None
    measured_requests: int | None = None
    measured_preemptions: int | None = None
    measured_preemptions_per_10k: float | None = None
    measured_upper_95_per_10k: float | None = None  # rule of three when none was measured
    measured_kv_tokens_per_request: float | None = None
    # max_num_seqs x the longest request the workload can send (whole blocks), as a share of the
    # pool: below 95 % no offered load can fill the pool or preempt; only longer requests can.
    batch_cap_bound_frac: float | None = None
    measured_from: str | None = None
    target_preemptions_per_10k: float | None = None
    # Every request this many times as long (both distributions scaled) before the pool's predicted
    # rate passes the target; None: not within 8x (or the context caps the lengths first).
    length_factor_at_target: float | None = None
    sizings: list[SizingOption] = []
    model: str | None = None  # the prediction's assumptions, in words


class DeviceMemory(BaseModel):
    """The physical margin: NVML's peak device memory vs the device total, over the headroom steps."""

    status: Literal["measured", "not_measured"]
    reason: str | None = None
    peak_bytes: float | None = None
    total_bytes: float | None = None
    margin_pct: float | None = None
    basis: str | None = None


class Headroom(OpenModel):
    """`headroom.json`, and `headroom` in recommendation.json's recommendation.

    finished   false while steps are still to come (a rerun resumes after the last one)
    skipped    why nothing was measured (no verified sizing, --no-headroom, a dataset workload)
    """

    schema_version: int = HEADROOM_SCHEMA_VERSION
    finished: bool = False
    skipped: str | None = None
    config: str | None = None
    level: str | None = None
    recommended_rate: float | None = None  # requests/s measured at the recommended load
    recommended_basis: str | None = None
    factors: list[float] = []
    window_s: float | None = None
    arrival: str | None = None
    stop_reason: str | None = None
    steps: list[HeadroomStep] = []
    onsets: list[Onset] = []
    length_factors: list[float] = []
    length_steps: list[HeadroomStep] = []
    length_onsets: list[LengthOnset] = []
    length_stop_reason: str | None = None
    tail: TailRisk | None = None
    device_memory: DeviceMemory | None = None
    kv_pool_bytes: float | None = None
    kv_pool_meaning: str | None = None

    def onset(self, kind: str) -> Onset | None:
        return next((o for o in self.onsets if o.kind == kind), None)


def new_headroom(**fields: object) -> Headroom:
    """A headroom record with the schema version set, so the file names it."""
    return Headroom(schema_version=HEADROOM_SCHEMA_VERSION, **fields)  # type: ignore[arg-type]


def read_headroom(path: Path) -> Headroom | None:
    return Headroom.model_validate(orjson.loads(path.read_bytes())) if path.exists() else None


def write_headroom(path: Path, headroom: Headroom) -> None:
    write_json(path, headroom.to_file())
