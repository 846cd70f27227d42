"""The one precision table: what each precision name means to every backend and analysis.

`weight_bytes` is per parameter of the linear layers (FP8 quantizes those only; embeddings and
norms stay 16-bit), `kv_bytes` per KV-cache element when the cache dtype is "auto" (the model
dtype). FP8 tensor cores exist from compute capability 8.9 (Ada: L4, L40S; Hopper: H100, H200);
Ampere (A100, 8.0) has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PrecisionName = Literal["fp32", "fp16", "bf16", "fp8"]
KvCacheDtype = Literal["auto", "fp8"]
FP8_MIN_CAPABILITY = (8, 9)


@dataclass(frozen=True, slots=True)
class Precision:
    name: str
    dtype: str  # the model dtype the server runs (torch name)
    weight_bytes: int  # per linear-layer parameter
    other_weight_bytes: int  # embeddings, norms: never quantized below 16 bit
    kv_bytes: int  # per KV element with kv_cache_dtype "auto"
    quantized_fp8: bool  # weights quantized to FP8: needs FP8 tensor cores


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", "float32", 4, 4, 4, False),
    "fp16": Precision("fp16", "float16", 2, 2, 2, False),
    "bf16": Precision("bf16", "bfloat16", 2, 2, 2, False),
    # Dynamic FP8 weight quantization; activations and the KV cache stay bf16 unless asked.
    "fp8": Precision("fp8", "bfloat16", 1, 2, 2, True),
}
# Highest precision first: the reference order for comparisons.
PRECISION_NAMES: tuple[str, ...] = tuple(PRECISIONS)
KV_CACHE_DTYPES: tuple[str, ...] = ("auto", "fp8")


def kv_bytes_per_element(precision: str, kv_cache_dtype: str = "auto") -> int:
    return 1 if kv_cache_dtype == "fp8" else PRECISIONS[precision].kv_bytes


def has_fp8_tensor_cores(capability: tuple[int, int] | None) -> bool | None:
    """None when unknown (no GPU visible)."""
    return None if capability is None else tuple(capability) >= FP8_MIN_CAPABILITY


def fp8_refusal(capability: tuple[int, int]) -> str:
    return (f"fp8 needs FP8 tensor cores (compute capability >= 8.9: L4, L40S, H100, H200); this GPU has "
            f"{capability[0]}.{capability[1]} (an A100 is 8.0). Use bf16 on this GPU.")
