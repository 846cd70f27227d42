"""GPU SKUs: datasheet figures, preferred precision, and roofline projections.

Figures are dense (no structured sparsity) peak rates from NVIDIA's product datasheets:
  A100: "NVIDIA A100 Tensor Core GPU" datasheet (SXM figures; 40 GB HBM2 1,555 GB/s, 80 GB HBM2e 2,039 GB/s)
  H100: "NVIDIA H100 Tensor Core GPU" datasheet (SXM5 and PCIe columns)
  H200: "NVIDIA H200 Tensor Core GPU" datasheet (SXM)
  L40S: "NVIDIA L40S" datasheet;  L4: "NVIDIA L4 Tensor Core GPU" datasheet
  A10G: AWS's variant of the A10, with no NVIDIA datasheet of its own; the figures are the
        "NVIDIA A10 Tensor Core GPU" datasheet's, and the A10G's real tensor rate is lower.
The fp32 column is the non-tensor FP32 rate: PyTorch runs float32 matmuls in full FP32 unless
TF32 is switched on, and vLLM does not switch it on.

Projection from a measured SKU M to another SKU S at precision p (labelled `projected`):
  decode (output tokens/s at a memory-bound batch)  x  bandwidth(S) / bandwidth(M)
  prefill (prompt tokens/s, so 1/TTFT)              x  TFLOP/s(S, p) / TFLOP/s(M, p)
Assumptions: same model, batch and software; decode stays memory-bound and prefill
compute-bound on both; the datasheet rates are reached in the same proportion on both; the
model and its KV cache fit in S's memory (checked against the measured memory need).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sku:
    name: str
    memory_gb: float
    bandwidth_gb_s: float
    tflops: dict[str, float | None]  # fp32, fp16, bf16, fp8 (None: no such tensor-core path)
    compute_capability: tuple[int, int]
    source: str

    @property
    def fp8(self) -> bool:
        return self.tflops.get("fp8") is not None


SKUS: dict[str, Sku] = {s.name: s for s in [
    Sku("A100-40GB", 40, 1555, {"fp32": 19.5, "fp16": 312, "bf16": 312, "fp8": None}, (8, 0),
        "NVIDIA A100 Tensor Core GPU datasheet"),
    Sku("A100-80GB", 80, 2039, {"fp32": 19.5, "fp16": 312, "bf16": 312, "fp8": None}, (8, 0),
        "NVIDIA A100 Tensor Core GPU datasheet"),
    Sku("H100-SXM", 80, 3350, {"fp32": 67, "fp16": 989, "bf16": 989, "fp8": 1979}, (9, 0),
        "NVIDIA H100 Tensor Core GPU datasheet (SXM)"),
    Sku("H100-PCIe", 80, 2000, {"fp32": 51, "fp16": 756, "bf16": 756, "fp8": 1513}, (9, 0),
        "NVIDIA H100 Tensor Core GPU datasheet (PCIe)"),
    Sku("H200", 141, 4800, {"fp32": 67, "fp16": 989, "bf16": 989, "fp8": 1979}, (9, 0),
        "NVIDIA H200 Tensor Core GPU datasheet (SXM)"),
    Sku("L40S", 48, 864, {"fp32": 91.6, "fp16": 362, "bf16": 362, "fp8": 733}, (8, 9),
        "NVIDIA L40S datasheet"),
    Sku("L4", 24, 300, {"fp32": 30.3, "fp16": 121, "bf16": 121, "fp8": 242.5}, (8, 9),
        "NVIDIA L4 Tensor Core GPU datasheet"),
    Sku("A10G", 24, 600, {"fp32": 31.2, "fp16": 125, "bf16": 125, "fp8": None}, (8, 6),
        "NVIDIA A10 datasheet figures (A10G: AWS variant, no NVIDIA datasheet; real tensor rate lower)"),
]}


def sku_from_gpu_name(name: str | None) -> str | None:
    """Map an NVML device name (e.g. 'NVIDIA H100 80GB HBM3') to a key of SKUS."""
    if not name:
        return None
    n = name.upper()
    if "H200" in n:
        return "H200"
    if "H100" in n:
        return "H100-PCIe" if "PCIE" in n else "H100-SXM"
    if "A100" in n:
        return "A100-80GB" if "80G" in n else "A100-40GB"
    if "L40S" in n:
        return "L40S"
    if n.endswith(" L4") or " L4 " in n or n == "L4":
        return "L4"
    if "A10G" in n:
        return "A10G"
    return None


def preferred_precision(sku: Sku, measured: dict[str, float] | None = None,
                        gate_passed: dict[str, bool] | None = None) -> tuple[str, str]:
    """(precision, reason) for one SKU; measured throughputs decide where they exist."""
    gate_passed = gate_passed or {}
    if measured:
        candidates = {p: t for p, t in measured.items() if t and gate_passed.get(p, True)}
        if candidates:
            best = max(candidates, key=candidates.get)
            others = ", ".join(f"{p} {t:,.0f}" for p, t in sorted(measured.items()) if t)
            return best, f"highest measured output throughput on this SKU (tok/s: {others})"
    if sku.fp8 and gate_passed.get("fp8", True):
        return "fp8", (f"FP8 tensor cores (compute capability {sku.compute_capability[0]}.{sku.compute_capability[1]}):"
                       f" {sku.tflops['fp8']:g} vs {sku.tflops['bf16']:g} dense TFLOP/s for bf16, and half the weight"
                       " bytes per decoded token; subject to the accuracy gate")
    return "bf16", (f"no FP8 tensor cores (compute capability {sku.compute_capability[0]}.{sku.compute_capability[1]});"
                    " bf16 keeps fp32's exponent range (fp16 can overflow) at the full tensor-core rate")


def sku_table(measured_sku: str | None, measured_by_precision: dict[str, dict[str, Any]] | None,
              memory_needed_bytes: float | None, gate_passed: dict[str, bool] | None = None,
              wanted: list[str] | None = None) -> dict[str, Any]:
    """`sku_to_preferred_precision`: one entry per SKU, measured or projected from the measured one."""
    base = SKUS.get(measured_sku) if measured_sku else None
    table: dict[str, Any] = {}
    names = list(SKUS)
    for extra in wanted or []:
        if extra not in names:
            names.append(extra)
    for name in names:
        sku = SKUS.get(name)
        if sku is None:
            table[name] = {"precision": None, "reason": "unknown SKU: no datasheet figures in servesweep",
                           "basis": "projected"}
            continue
        is_measured = base is not None and name == base.name
        measured_tput = ({p: v.get("output_token_throughput") for p, v in (measured_by_precision or {}).items()}
                         if is_measured else None)
        precision, reason = preferred_precision(sku, measured_tput, gate_passed)
        entry: dict[str, Any] = {"precision": precision, "reason": reason,
                                 "basis": "measured" if is_measured else "projected", "datasheet": asdict(sku)}
        entry["datasheet"]["compute_capability"] = f"{sku.compute_capability[0]}.{sku.compute_capability[1]}"
        if memory_needed_bytes:
            entry["fits_memory"] = memory_needed_bytes <= sku.memory_gb * 1e9 * 0.9
        if base is not None and not is_measured and measured_by_precision:
            entry["projection"] = _project(base, sku, measured_by_precision)
        table[name] = entry
    return table


def _project(base: Sku, target: Sku, measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for precision, m in measured.items():
        use = precision
        if precision == "fp8" and not target.fp8:
            continue  # no FP8 path on the target: its bf16 projection applies
        decode = m.get("output_token_throughput")
        ttft = m.get("ttft_p50_ms")
        compute_ratio = (target.tflops[use] or 0) / (base.tflops[use] or 1)
        out[precision] = {
            "output_token_throughput": decode * target.bandwidth_gb_s / base.bandwidth_gb_s if decode else None,
            "ttft_p50_ms": ttft / compute_ratio if ttft and compute_ratio else None,
            "from": f"{base.name} measured, x bandwidth {target.bandwidth_gb_s:g}/{base.bandwidth_gb_s:g}"
                    f" (decode), x {use} TFLOP/s {target.tflops[use]:g}/{base.tflops[use]:g} (prefill)",
        }
    return out
