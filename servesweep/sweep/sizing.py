"""Size the KV cache so that peak use under the verification's stress run sits in the middle of the
OOM-margin band.

The OOM-margin band is 5-40 % of the KV pool free at peak (servesweep/thresholds.py MARGIN_BAND).
The target is its middle, a 22.5 % margin, i.e. peak KV use = 77.5 % of the pool:

    budget = target peak bytes / 0.775

The target peak is the larger of
  - the KV peak measured at the recommended load (the sweep's rung), and
  - the stress run's expected peak (when the p99 request length is given): max_num_seqs requests
    running at once, each holding the p99 prompt + p99 output tokens (rounded up to whole blocks).
    The stress run (sweep/verify_plan.py) sends only p99-length requests at the measured rate, with
    twice the batch in flight, so the server's batch is full and every running request grows
    to that length: this is the peak the margin is judged on. Running requests are staggered,
    so the measured peak is a little below it and the margin a little above 22.5 %.

then, in this order:
  1. rounded up to a whole number of KV blocks (block_size x bytes per token), when both are known;
  2. raised to the floor, when it is lower: one request of max_model_len tokens must fit
     (max_model_len x bytes per token, rounded up to blocks). `floor_binds` says when it did; the
     margin at the recommended load is then above the target, possibly above the band.
The budget and the batch cap are turned into the server's own knobs by its backend
(`memory_settings`, servesweep.backends): vLLM takes the budget as `--kv-cache-memory-bytes` and
its equivalent `--gpu-memory-utilization` is (non-KV bytes + budget) / device total; TensorRT-LLM
takes it as `kv_cache_config.max_tokens` and its equivalent `free_gpu_memory_fraction` is
budget / (device total - non-KV bytes), a fraction of the memory free after loading
(servesweep.memory_fraction). Both are rounded up to 0.001. Non-KV bytes (weights, activations, CUDA
graphs, context) come from the measurement when given (device memory peak - KV pool bytes),
else from the server's own accounting of the fraction the run used (its default, 0.9, when the
run did not set one). On CPU there is no device total: no fraction, and `fits_device` is None.

max_num_seqs: the recommended concurrency, so the batch never grows past the one whose KV peak
was measured. If the run's own max_num_seqs was lower, that cap is kept: a larger batch was
never measured.

Step back (a failed verification): `step_back(sizing, traffic, stress)` gives the next notch
from what the failed attempt MEASURED, keeping max_num_seqs (the knee's throughput is the point
of the recommendation). For each run with KV telemetry, the KV it needed:
  - no preemption and peak below the full mark (95 %): the measured peak (peak fraction x budget);
    this also shrinks a budget whose margin came out above the band;
  - preempted or full: the demand did not fit, so the gauge only shows the pool. The running
    batch shows by how much: the pool held at most `running_batch_peak` requests where
    max_num_seqs wanted to run, so the need is budget x max_num_seqs / running_batch_peak (at
    least the stress run's expected peak, and at least 10 % more than the budget). When the
    running batch reached max_num_seqs anyway, nothing says by how much: +25 %, labelled so.
The new target peak is the larger need of the two runs, and budget = target / 0.775 as above.
Without any KV telemetry, +25 % (labelled). When the device total is known and the new budget
would not fit (equivalent fraction > 1.0), max_num_seqs is lowered in proportion to what
fits instead, and the budget kept. At most MAX_STEP_BACKS (2) notches; a third raises
ValueError. The caller runs the verification again after each notch.

Worked example (a Llama-style model: 32 layers x 2 (K, V) x 8 KV heads x 128 dims x 2 bytes
= 131072 bytes per token; block_size 16, so a block is 2 MiB; 80 GiB device; measured
non-KV 20 GiB; KV peak at the recommended load 7.75 GiB; max_model_len 8192; concurrency 48):
    budget  = 7.75 GiB / 0.775 = 10 GiB = 5120 blocks exactly -> 10737418240 bytes
    floor   = 8192 x 131072 = 1 GiB: does not bind
    vLLM: gpu_memory_utilization = (20 + 10) GiB / 80 GiB = 0.375;  max_num_seqs = 48
    TensorRT-LLM: free_gpu_memory_fraction = 10 GiB / (80 - 20) GiB = 0.167; max_tokens = 81920
    expected peak use 7.75 / 10 = 77.5 % -> margin 22.5 %
    step back: 10 GiB x 1.25 = 12.5 GiB = 6400 blocks; utilization 32.5 / 80 = 0.40625 -> 0.407;
               expected margin 1 - 7.75 / 12.5 = 38 %
With max_model_len 131072 the floor is 16 GiB and binds: budget 16 GiB, margin 51.6 % (above
the band: the floor, not the load, sets the memory).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from servesweep.backends import DEFAULT_KIND, MeasuredMemory, MemoryBudget, backend_for
from servesweep.thresholds import KV_FULL_FRAC, MARGIN_BAND, TARGET_MARGIN_PCT

TARGET_PEAK_FRAC = 1.0 - TARGET_MARGIN_PCT / 100.0  # 0.775
STEP_BACK_KV_FACTOR = 1.25  # only when the failed attempt measured no overshoot
MIN_STEP_FACTOR = 1.10  # a preempting attempt's next budget is at least this much larger
STEP_BACK_SEQS_FACTOR = 0.75
MAX_STEP_BACKS = 2


class SizingInputs(BaseModel):
    """What was measured at the recommended load, and the configuration it ran under."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: str = DEFAULT_KIND  # the server's backend: whose knobs the sizing is written in
    concurrency: int = Field(ge=1)  # the recommended concurrency
    kv_peak_bytes: float | None = Field(None, ge=0)  # or kv_peak_frac x pool_bytes
    kv_peak_frac: float | None = Field(None, ge=0, le=1)
    pool_bytes: int | None = Field(None, gt=0)
    pool_tokens: int | None = Field(None, gt=0)
    bytes_per_token: float | None = Field(None, gt=0)  # or pool_bytes / pool_tokens
    block_size: int | None = Field(None, gt=0)  # tokens per KV block
    max_model_len: int | None = Field(None, gt=0)
    device_total_bytes: int | None = Field(None, gt=0)  # None on CPU
    # The run's; None: the server's default. Files written before backends owned their knobs say
    # gpu_memory_utilization.
    memory_fraction: float | None = Field(None, gt=0, le=1, validation_alias=AliasChoices(
        "memory_fraction", "gpu_memory_utilization"))
    tensor_parallel_size: int = Field(1, ge=1)
    non_kv_bytes: float | None = Field(None, ge=0)  # measured: device memory peak - pool bytes
    max_num_seqs: int | None = Field(None, ge=1)  # the run's
    stress_request_tokens: int | None = Field(None, gt=0)  # p99 prompt + p99 output of the stress run

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
    max_num_seqs: int  # the batch cap, whatever the server calls it
    kind: str = DEFAULT_KIND
    # The server's own knobs (name -> value) and flags, from its backend's memory_settings.
    knobs: dict[str, Any] = {}
    flags: list[str] = []
    config_update: dict[str, Any] = {}  # the server configuration's fields for a relaunch at this sizing
    # The equivalent fraction by the server's rule; None without a device total.
    memory_fraction: float | None = Field(None, validation_alias=AliasChoices("memory_fraction",
                                                                              "gpu_memory_utilization"))
    memory_fraction_of: str | None = None
    fits_device: bool | None  # None on CPU
    non_kv_bytes: float | None
    non_kv_source: str | None
    kv_peak_bytes: float  # measured at the recommended load
    stress_peak_bytes: float | None = None  # expected under the stress run (module docstring)
    target_peak_bytes: float | None = None  # what the budget was sized for
    target_source: str | None = None
    target_peak_frac: float = TARGET_PEAK_FRAC
    expected_peak_frac: float  # target peak / budget
    expected_margin_pct: float
    floor_bytes: int | None  # one max_model_len request; None when max_model_len or bytes/token is unknown
    floor_binds: bool | None
    step: int = 0  # step-backs applied
    change: str = "initial"
    notes: list[str] = []
    inputs: SizingInputs

    def server_args(self) -> list[str]:
        return list(self.flags)

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


def measured_memory(inputs: SizingInputs) -> MeasuredMemory:
    """What the backend needs to turn a budget into its knobs."""
    return MeasuredMemory(device_total_bytes=inputs.device_total_bytes, non_kv_bytes=inputs.non_kv_bytes,
                          pool_bytes=inputs.pool_bytes, memory_fraction=inputs.memory_fraction,
                          bytes_per_token=inputs.per_token(), tensor_parallel_size=inputs.tensor_parallel_size)


def stress_peak_bytes(inputs: SizingInputs, seqs: int) -> float | None:
    """`seqs` requests of the stress run's p99 length, each rounded up to whole blocks; None when
    the length or the bytes per token are unknown."""
    per_token = inputs.per_token()
    if inputs.stress_request_tokens is None or per_token is None:
        return None
    tokens = inputs.stress_request_tokens
    if inputs.block_size:
        tokens = math.ceil(tokens / inputs.block_size) * inputs.block_size
    return float(seqs * tokens * per_token)


def _build(inputs: SizingInputs, target: float, source: str, max_num_seqs: int, step: int, change: str,
           notes: list[str], raw_budget: float | None = None) -> Sizing:
    """The sizing for a target peak (budget = target / TARGET_PEAK_FRAC unless `raw_budget` is given)."""
    block = _block_bytes(inputs)
    budget = _round_up(target / TARGET_PEAK_FRAC if raw_budget is None else raw_budget, block)
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
    settings = backend_for(inputs.kind).memory_settings(MemoryBudget(kv_bytes=budget, max_batch_size=max_num_seqs),
                                                         measured_memory(inputs))
    notes.extend(settings.notes)
    expected = target / budget if budget else 1.0
    margin = (1.0 - expected) * 100.0
    if margin > MARGIN_BAND[1]:
        notes.append(f"expected margin {margin:.1f} % is above the {MARGIN_BAND[1]:g} % band edge")
    return Sizing(
        kv_cache_memory_bytes=budget, kv_blocks=budget // block if block else None, max_num_seqs=max_num_seqs,
        kind=inputs.kind, knobs=settings.knobs, flags=settings.server_args, config_update=settings.config_update, memory_fraction=settings.memory_fraction,
        memory_fraction_of=settings.memory_fraction_of, fits_device=settings.fits_device,
        non_kv_bytes=settings.non_kv_bytes, non_kv_source=settings.non_kv_source,
        kv_peak_bytes=inputs.peak_bytes(), stress_peak_bytes=stress_peak_bytes(inputs, max_num_seqs),
        target_peak_bytes=target, target_source=source, expected_peak_frac=expected, expected_margin_pct=margin,
        floor_bytes=floor, floor_binds=floor_binds, step=step, change=change, notes=notes, inputs=inputs,
    )


def size_kv(inputs: SizingInputs) -> Sizing:
    """The initial recommendation: the larger of the measured and the stress peak at
    TARGET_PEAK_FRAC of the budget (module docstring)."""
    notes: list[str] = []
    seqs = inputs.concurrency
    if inputs.max_num_seqs is not None and inputs.max_num_seqs < inputs.concurrency:
        seqs = inputs.max_num_seqs
        notes.append(f"max_num_seqs kept at the run's {seqs}: the KV peak was measured with the batch capped there")
    measured, stress = inputs.peak_bytes(), stress_peak_bytes(inputs, seqs)
    if stress is not None and stress > measured:
        return _build(inputs, stress, f"stress run's expected peak ({seqs} x {inputs.stress_request_tokens} "
                                      "tokens)", seqs, 0, "initial", notes)
    if stress is None:
        notes.append("no p99 request length (or bytes per token): sized on the measured peak only")
    return _build(inputs, measured, "measured at the recommended load", seqs, 0, "initial", notes)


def measured_need(sizing: Sizing, obs: Any) -> tuple[float | None, str]:
    """The KV one verification run needed, from its telemetry (module docstring); None without it.
    `obs`: a sweep.observation.Observation (kv_peak_frac, preemptions, running_batch_peak)."""
    frac = getattr(obs, "kv_peak_frac", None)
    if obs is None or frac is None:
        return None, "no KV telemetry"
    budget, seqs = sizing.kv_cache_memory_bytes, sizing.max_num_seqs
    if not getattr(obs, "preemptions", None) and frac < KV_FULL_FRAC:
        return frac * budget, f"measured peak {frac:.1%} of {budget / 2**30:.2f} GiB"
    running = getattr(obs, "running_batch_peak", None)
    why = f"{obs.preemptions or 0} preemption(s), peak {frac:.1%}"
    if running and 0 < running < seqs:
        need = max(budget * seqs / running, budget * MIN_STEP_FACTOR, sizing.stress_peak_bytes or 0.0)
        return need, f"{why}; the pool held {running:g} of {seqs} running requests: needs x {need / budget:.2f}"
    return budget * STEP_BACK_KV_FACTOR, f"{why}; running batch reached {seqs}: no measured overshoot, +25 %"


def step_back(sizing: Sizing, traffic: Any = None, stress: Any = None) -> Sizing:
    """The next notch after a failed verification, from what its runs measured (module docstring)."""
    if sizing.step >= MAX_STEP_BACKS:
        raise ValueError(f"already stepped back {sizing.step} times (at most {MAX_STEP_BACKS})")
    step = sizing.step + 1
    needs = [(n, f"{kind}: {why}") for kind, obs in (("traffic", traffic), ("stress", stress))
             for n, why in [measured_need(sizing, obs)] if n is not None]
    previous = sizing.target_peak_bytes or sizing.kv_peak_bytes
    if needs:
        target, source = max(needs, key=lambda x: x[0])
        bigger = _build(sizing.inputs, target, source, sizing.max_num_seqs, step,
                        f"KV budget from the measured need ({source})", [])
    else:  # nothing measured: the fixed notch, same target, labelled so
        bigger = _build(sizing.inputs, previous, sizing.target_source or "previous target", sizing.max_num_seqs, step,
                        f"KV budget x {STEP_BACK_KV_FACTOR:g} (no KV telemetry: nothing measured to step from)", [],
                        raw_budget=sizing.kv_cache_memory_bytes * STEP_BACK_KV_FACTOR)
    if bigger.fits_device is not False or sizing.max_num_seqs <= 1:
        return bigger
    # The device cannot hold that budget: keep this one and run fewer requests at once, in
    # proportion to the KV each of them turned out to need.
    seqs = max(1, math.floor(sizing.max_num_seqs * sizing.kv_cache_memory_bytes / bigger.kv_cache_memory_bytes))
    notes = [f"a KV budget of {bigger.kv_cache_memory_bytes} bytes would not fit the device; max_num_seqs lowered "
             "instead", "expected peak use is from the larger batch's measurement: an upper bound"]
    return _build(sizing.inputs, previous, sizing.target_source or "previous target", seqs, step,
                  f"max_num_seqs {sizing.max_num_seqs} -> {seqs}", notes, raw_budget=sizing.kv_cache_memory_bytes)
