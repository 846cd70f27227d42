"""What a server's memory fraction is a fraction of, and the arithmetic that follows from it.

Servers size their KV pool from a fraction, but not of the same thing:
  "device"  vLLM's gpu_memory_utilization: the whole device holds fraction x total, so the pool is
            fraction x total - non-KV memory (weights, activations, CUDA graphs, context).
  "free"    TensorRT-LLM's kv_cache_config.free_gpu_memory_fraction: the pool is fraction x the
            memory still free after the model loaded, i.e. fraction x (total - non-KV).
Each backend names its rule (`ServerConfig.memory_fraction_of`) and records it with its points,
so the sizing (through the backend) and the reports (from the recorded name) apply the right one.
This module is on the ground floor: the backends and the reports both import it, nothing else.

Non-KV memory measured on a run is device memory peak - KV pool bytes; for "free" that is a
little more than what was in use when the server measured free memory (activations come later),
so the fraction computed from it is a little high: on the safe side for the pool it gives.
"""

from __future__ import annotations

import math
from typing import Literal

FractionOf = Literal["device", "free"]
FRACTION_RULES: tuple[FractionOf, ...] = ("device", "free")
# Both servers' own default fraction (vLLM --gpu-memory-utilization, TensorRT-LLM
# kv_cache_config.free_gpu_memory_fraction) is 0.9.
DEFAULT_MEMORY_FRACTION = 0.9
MAX_MEMORY_FRACTION = 1.0


def non_kv_from_fraction(of: FractionOf, fraction: float, device_total: float, pool: float) -> float:
    """Non-KV memory implied by the fraction a run used and the pool it got."""
    if of == "free":
        return device_total - pool / fraction  # the pool was fraction x (total - non-KV)
    return fraction * device_total - pool  # the pool was fraction x total - non-KV


def exact_fraction(of: FractionOf, pool: float, device_total: float, non_kv: float) -> float:
    """The fraction that gives a pool of `pool` bytes (unrounded; above 1.0: it does not fit)."""
    if of == "free":
        free = device_total - non_kv
        return pool / free if free > 0 else math.inf
    return (non_kv + pool) / device_total


def round_up_fraction(exact: float) -> float:
    """Rounded up to 0.001, so the pool is never smaller than asked (round() first: float noise)."""
    return math.ceil(round(exact * 1000, 6)) / 1000
