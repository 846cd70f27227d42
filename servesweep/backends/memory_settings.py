"""The types of a backend's `memory_settings`: a KV budget and what was measured in, the
server's own knobs out. The sizing (servesweep.sweep.sizing) decides how many bytes of KV cache
and how large a batch; each backend says how its server is told so, because the servers do not
read a memory fraction the same way (servesweep.memory_fraction).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from servesweep.memory_fraction import (
    DEFAULT_MEMORY_FRACTION,
    MAX_MEMORY_FRACTION,
    FractionOf,
    exact_fraction,
    non_kv_from_fraction,
    round_up_fraction,
)


class MemoryBudget(BaseModel):
    """What the sizing asks for: a KV pool per GPU and a batch cap."""

    kv_bytes: int = Field(gt=0)
    max_batch_size: int = Field(ge=1)


class MeasuredMemory(BaseModel):
    """What a run measured and the memory fraction it ran with (None: the server's default)."""

    model_config = ConfigDict(extra="forbid")

    device_total_bytes: int | None = None  # None on CPU
    non_kv_bytes: float | None = None  # device memory peak - KV pool bytes
    pool_bytes: int | None = None
    memory_fraction: float | None = None
    bytes_per_token: float | None = None  # KV bytes per token on one GPU
    tensor_parallel_size: int = 1


class MemorySettings(BaseModel):
    """A budget in the server's own words: its knob names with their values, and the flags."""

    knobs: dict[str, Any]  # the server's knob name -> value
    server_args: list[str]
    # The ServerConfig fields a relaunch at this budget sets (the verification's attempts).
    config_update: dict[str, Any]
    memory_fraction: float | None  # the equivalent fraction, by the server's rule; None without a device total
    memory_fraction_of: FractionOf
    fits_device: bool | None  # None on CPU
    non_kv_bytes: float | None
    non_kv_source: str | None
    notes: list[str] = []


def fraction_for_budget(of: FractionOf, kv_bytes: int, measured: MeasuredMemory, fraction_name: str,
                        accounting: str) -> tuple[float | None, bool | None, float | None, str | None, list[str]]:
    """(fraction, fits, non-KV bytes, where non-KV came from, notes) for a KV pool of `kv_bytes` by
    rule `of`; the shared half of every backend's `memory_settings`. `fraction_name`: the server's
    knob, `accounting`: how its own accounting gives non-KV memory, for the notes."""
    notes: list[str] = []
    total = measured.device_total_bytes
    if total is None:
        return None, None, None, None, notes
    if measured.non_kv_bytes is not None:
        non_kv, source = measured.non_kv_bytes, "measured (device memory peak - KV pool bytes)"
    elif measured.pool_bytes is None:
        notes.append(f"non-KV memory unknown (no device peak, no pool size): no equivalent {fraction_name}")
        return None, None, None, None, notes
    else:
        used = measured.memory_fraction
        if used is None:
            used = DEFAULT_MEMORY_FRACTION
            notes.append(f"the run did not set {fraction_name}; the server's default {used} assumed")
        non_kv, source = non_kv_from_fraction(of, used, total, measured.pool_bytes), accounting
    exact = exact_fraction(of, kv_bytes, total, non_kv)
    fits = exact <= MAX_MEMORY_FRACTION
    if not fits:
        notes.append(f"does not fit the device: needs {exact:.3f} of its {'free ' if of == 'free' else ''}memory")
    return round_up_fraction(exact), fits, non_kv, source, notes
