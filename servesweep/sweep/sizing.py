"""Size the KV cache so that peak use at the recommended load sits in the middle of the OOM-margin band.

The OOM-margin band is 5-40 % of the KV pool free at peak (reports/analysis.py MARGIN_BAND).
The target is its middle, a 22.5 % margin, i.e. peak KV use = 77.5 % of the pool:

    budget = measured KV peak bytes / 0.775

then, in this order:
  1. rounded up to a whole number of KV blocks (block_size x bytes per token), when both are known;
  2. raised to the floor, when it is lower: one request of max_model_len tokens must fit
     (max_model_len x bytes per token, rounded up to blocks). `floor_binds` says when it did; the
     margin at the recommended load is then above the target, possibly above the band.
The budget is what vLLM takes as `--kv-cache-memory-bytes` (on GPU and CPU alike). With a
device total and the non-KV memory known, the equivalent `--gpu-memory-utilization` is
(non-KV bytes + budget) / device total, rounded up to 0.001. Non-KV bytes (weights,
activations, CUDA graphs, context) come from the measurement when given (device memory peak
- KV pool bytes), else from vLLM's own accounting (utilization x device total - KV pool bytes;
utilization 0.9, vLLM's default, when the run did not set it). On CPU there is no device
total: no utilization, and `fits_device` is None.

max_num_seqs: the recommended concurrency, so the batch never grows past the one whose KV peak
was measured. If the run's own max_num_seqs was lower, that cap is kept: a larger batch was
never measured.

Step back (a failed verification): `step_back(sizing)` gives the next notch: +25 % KV budget
(re-rounded to blocks), keeping max_num_seqs, because the knee's throughput is the point of
the recommendation and the usual failure (preemption or a thin margin under p99-length
requests) is a KV shortage. When the device total is known and the larger budget would not
fit (equivalent utilization > 1.0), it lowers max_num_seqs by a quarter instead and keeps the
budget. At most MAX_STEP_BACKS (2) notches; a third raises ValueError. The caller runs the
verification again after each notch.

Worked example (a Llama-style model: 32 layers x 2 (K, V) x 8 KV heads x 128 dims x 2 bytes
= 131072 bytes per token; block_size 16, so a block is 2 MiB; 80 GiB device; measured
non-KV 20 GiB; KV peak at the recommended load 7.75 GiB; max_model_len 8192; concurrency 48):
    budget  = 7.75 GiB / 0.775 = 10 GiB = 5120 blocks exactly -> 10737418240 bytes
    floor   = 8192 x 131072 = 1 GiB: does not bind
    utilization = (20 + 10) GiB / 80 GiB = 0.375;  max_num_seqs = 48
    expected peak use 7.75 / 10 = 77.5 % -> margin 22.5 %
    step back: 10 GiB x 1.25 = 12.5 GiB = 6400 blocks; utilization 32.5 / 80 = 0.40625 -> 0.407;
               expected margin 1 - 7.75 / 12.5 = 38 %
With max_model_len 131072 the floor is 16 GiB and binds: budget 16 GiB, margin 51.6 % (above
the band: the floor, not the load, sets the memory).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from servesweep.reports.analysis import MARGIN_BAND

TARGET_MARGIN_PCT = (MARGIN_BAND[0] + MARGIN_BAND[1]) / 2  # 22.5
TARGET_PEAK_FRAC = 1.0 - TARGET_MARGIN_PCT / 100.0  # 0.775
STEP_BACK_KV_FACTOR = 1.25
STEP_BACK_SEQS_FACTOR = 0.75
MAX_STEP_BACKS = 2
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
MAX_GPU_MEMORY_UTILIZATION = 1.0


class SizingInputs(BaseModel):
    """What was measured at the recommended load, and the configuration it ran under."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(ge=1)  # the recommended concurrency
    kv_peak_bytes: float | None = Field(None, ge=0)  # or kv_peak_frac x pool_bytes
    kv_peak_frac: float | None = Field(None, ge=0, le=1)
    pool_bytes: int | None = Field(None, gt=0)
    pool_tokens: int | None = Field(None, gt=0)
    bytes_per_token: float | None = Field(None, gt=0)  # or pool_bytes / pool_tokens
    block_size: int | None = Field(None, gt=0)  # tokens per KV block
    max_model_len: int | None = Field(None, gt=0)
    device_total_bytes: int | None = Field(None, gt=0)  # None on CPU
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)  # the run's; None = vLLM default
    non_kv_bytes: float | None = Field(None, ge=0)  # measured: device memory peak - pool bytes
    max_num_seqs: int | None = Field(None, ge=1)  # the run's

    def peak_bytes(self) -> float:
        if self.kv_peak_bytes is not None:
            return self.kv_peak_bytes
        if self.kv_peak_frac is not None and self.pool_bytes is not None:
            return self.kv_peak_frac * self.pool_bytes
        raise ValueError("cannot size the KV cache: no measured KV peak (give kv_peak_bytes, "
                         "or kv_peak_frac with pool_bytes)")

    def per_token(self) -> float | None:
        if self.bytes_per_token is not None:
            return self.bytes_per_token
        if self.pool_bytes is not None and self.pool_tokens is not None:
            return self.pool_bytes / self.pool_tokens
        return None


class Sizing(BaseModel):
    """The KV budget and batch cap to recommend, with the arithmetic's intermediate figures."""

    kv_cache_memory_bytes: int
    kv_blocks: int | None
    max_num_seqs: int
    gpu_memory_utilization: float | None  # equivalent setting; None without a device total
    fits_device: bool | None  # None on CPU
    non_kv_bytes: float | None
    non_kv_source: str | None
    kv_peak_bytes: float
    target_peak_frac: float = TARGET_PEAK_FRAC
    expected_peak_frac: float  # measured peak / budget
    expected_margin_pct: float
    floor_bytes: int | None  # one max_model_len request; None when max_model_len or bytes/token is unknown
    floor_binds: bool | None
    step: int = 0  # step-backs applied
    change: str = "initial"
    notes: list[str] = []
    inputs: SizingInputs

    def server_args(self) -> list[str]:
        return ["--kv-cache-memory-bytes", str(self.kv_cache_memory_bytes), "--max-num-seqs", str(self.max_num_seqs)]

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["server_args"] = self.server_args()
        return data


def _block_bytes(inputs: SizingInputs) -> int | None:
    per_token = inputs.per_token()
    if per_token is None or inputs.block_size is None:
        return None
    return int(round(inputs.block_size * per_token))


def _round_up(nbytes: float, block: int | None) -> int:
    # round() first: 7.75 GiB / 0.775 comes out a few millionths of a byte over 10 GiB.
    whole = math.ceil(round(nbytes, 3))
    return math.ceil(whole / block) * block if block else whole


def _non_kv(inputs: SizingInputs, notes: list[str]) -> tuple[float | None, str | None]:
    if inputs.device_total_bytes is None:
        return None, None
    if inputs.non_kv_bytes is not None:
        return inputs.non_kv_bytes, "measured (device memory peak - KV pool bytes)"
    if inputs.pool_bytes is None:
        notes.append("non-KV memory unknown (no device peak, no pool size): no equivalent gpu_memory_utilization")
        return None, None
    util = inputs.gpu_memory_utilization
    if util is None:
        util = VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
        notes.append(f"the run did not set gpu_memory_utilization; vLLM's default {util} assumed")
    return util * inputs.device_total_bytes - inputs.pool_bytes, "vLLM accounting (utilization x total - KV pool)"


def _build(inputs: SizingInputs, raw_budget: float, max_num_seqs: int, step: int, change: str,
           notes: list[str]) -> Sizing:
    block = _block_bytes(inputs)
    budget = _round_up(raw_budget, block)
    per_token = inputs.per_token()
    floor = floor_binds = None
    if per_token is not None and inputs.max_model_len is not None:
        floor = _round_up(inputs.max_model_len * per_token, block)
        floor_binds = budget < floor
        if floor_binds:
            budget = floor
            notes.append(f"floor binds: one {inputs.max_model_len}-token request needs {floor} bytes of KV cache, "
                         "more than the load does")
    else:
        notes.append("max_model_len or bytes per token unknown: the one-request floor was not checked")
    non_kv, source = _non_kv(inputs, notes)
    util = fits = None
    if non_kv is not None and inputs.device_total_bytes is not None:
        exact = (non_kv + budget) / inputs.device_total_bytes
        util = math.ceil(round(exact * 1000, 6)) / 1000
        fits = exact <= MAX_GPU_MEMORY_UTILIZATION
        if not fits:
            notes.append(f"does not fit the device: needs {exact:.3f} of its memory")
    peak = inputs.peak_bytes()
    expected = peak / budget if budget else 1.0
    margin = (1.0 - expected) * 100.0
    if margin > MARGIN_BAND[1]:
        notes.append(f"expected margin {margin:.1f} % is above the {MARGIN_BAND[1]:g} % band edge")
    return Sizing(
        kv_cache_memory_bytes=budget, kv_blocks=budget // block if block else None, max_num_seqs=max_num_seqs,
        gpu_memory_utilization=util, fits_device=fits, non_kv_bytes=non_kv, non_kv_source=source,
        kv_peak_bytes=peak, expected_peak_frac=expected, expected_margin_pct=margin, floor_bytes=floor,
        floor_binds=floor_binds, step=step, change=change, notes=notes, inputs=inputs,
    )


def size_kv(inputs: SizingInputs) -> Sizing:
    """The initial recommendation: peak KV use at TARGET_PEAK_FRAC of the budget (module docstring)."""
    notes: list[str] = []
    seqs = inputs.concurrency
    if inputs.max_num_seqs is not None and inputs.max_num_seqs < inputs.concurrency:
        seqs = inputs.max_num_seqs
        notes.append(f"max_num_seqs kept at the run's {seqs}: the KV peak was measured with the batch capped there")
    return _build(inputs, inputs.peak_bytes() / TARGET_PEAK_FRAC, seqs, 0, "initial", notes)


def step_back(sizing: Sizing) -> Sizing:
    """The next notch after a failed verification: +25 % KV budget, or max_num_seqs x 0.75 if that won't fit."""
    if sizing.step >= MAX_STEP_BACKS:
        raise ValueError(f"already stepped back {sizing.step} times (at most {MAX_STEP_BACKS})")
    step = sizing.step + 1
    bigger = _build(sizing.inputs, sizing.kv_cache_memory_bytes * STEP_BACK_KV_FACTOR, sizing.max_num_seqs, step,
                    f"KV budget x {STEP_BACK_KV_FACTOR:g}", [])
    if bigger.fits_device is not False or sizing.max_num_seqs <= 1:
        return bigger
    seqs = max(1, math.floor(sizing.max_num_seqs * STEP_BACK_SEQS_FACTOR))
    notes = [f"KV budget x {STEP_BACK_KV_FACTOR:g} would not fit the device; max_num_seqs lowered instead",
             "expected peak use is from the larger batch's measurement: an upper bound"]
    return _build(sizing.inputs, sizing.kv_cache_memory_bytes, seqs, step,
                  f"max_num_seqs {sizing.max_num_seqs} -> {seqs}", notes)
