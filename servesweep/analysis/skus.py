"""GPU SKUs: datasheet figures, preferred precision, and the rules that project measured figures
from one SKU onto another.

Figures are dense (no structured sparsity) peak rates from NVIDIA's product datasheets:
  A100: "NVIDIA A100 Tensor Core GPU" datasheet (SXM figures; 40 GB HBM2 1,555 GB/s, 80 GB HBM2e 2,039 GB/s)
  H100: "NVIDIA H100 Tensor Core GPU" datasheet (SXM5 and PCIe columns)
  H200: "NVIDIA H200 Tensor Core GPU" datasheet (SXM)
  L40S: "NVIDIA L40S" datasheet;  L4: "NVIDIA L4 Tensor Core GPU" datasheet
  A10G: AWS's variant of the A10, with no NVIDIA datasheet of its own; the figures are the
        "NVIDIA A10 Tensor Core GPU" datasheet's, and the A10G's real tensor rate is lower.
The fp32 column is the non-tensor FP32 rate: PyTorch runs float32 matmuls in full FP32 unless
TF32 is switched on, and vLLM does not switch it on.

Terms. M is the measured SKU, S the SKU projected onto, p the precision. The knee is
analysis/selection.py's (the largest sampled batch when it was not reached). A *figure* is one
number of the SKU table or of a prediction: its value, unit, the batch it refers to, its basis
(`measured` or `projected`) and `source` (the measured file and point, and the datasheets used);
a projected figure also names its `rule` (`RULES`: a stable id and its text) and `applied` (the
rule with this projection's numbers).

The rules, one per metric (each figure names the one it used):
  decode-roofline   output tok/s at the knee  x T(M) / T(S), where a decode step's time on a SKU X is
                      T(X) = m / bandwidth(X) + (1 - m) / TFLOP/s(X, p)   (in units of H100-SXM's rates)
                    and m = DECODE_MEMORY_SHARE at the knee batch: the memory-bound share of a decode
                    step on an H100-SXM. Written from M's own share m_M (m's term of T(M) over T(M)):
                      gain = 1 / (m_M / (bandwidth(S)/bandwidth(M)) + (1 - m_M) / (TFLOP/s(S)/TFLOP/s(M)))
  tpot-bandwidth    TPOT p50 at concurrency 1 x bandwidth(M) / bandwidth(S)
  prefill-compute   TTFT p50 at the knee      x TFLOP/s(M, p) / TFLOP/s(S, p)
  kv-pool-memory    KV pool tokens at the same memory fraction f:
                      pool bytes(S) = pool bytes(M) + (memory(S) - memory(M)) x f
                      tokens(S)     = pool bytes(S) / (pool bytes(M) / pool tokens(M))
                    memory(M) is the device total NVML reported; memory(S) = memory(M) x datasheet
                    GB(S) / GB(M) (datasheet "GB" are nearer GiB: an 80 GB H100 reports 79.6 GiB).
Assumptions they share: the same model, workload, server version and settings; both SKUs reach
the same fraction of their datasheet rates. Each adds its own:
  decode-roofline   a decode step is a memory-bound part (weights and KV read once) plus a
                    compute-bound part (the batch's matmuls), which add; the split at a batch is the
                    fitted one below (one model shape, one workload) and the knee stays at the same
                    batch (a larger KV pool on S can move it). TFLOP/s at p, or bf16's on a SKU with
                    no p tensor path (weight-only FP8 runs bf16 matmuls).
  tpot-bandwidth    one sequence's decode step reads every weight and its KV once: bandwidth-bound,
                    with the same share of fixed per-step overhead (scheduling, kernel launches).
  prefill-compute   prefill is compute-bound, and TTFT at the knee queues the same on both (a
                    closed loop at the same concurrency); the queueing is scaled with the prefill.
  kv-pool-memory    weights, activations and CUDA graphs take the same bytes on both, so every
                    extra byte under the fraction goes to the pool.

Which rule changed, and why (issue 23). Until 2026-12-02 output tok/s at the knee was projected by
`decode-bandwidth` (x bandwidth(S)/bandwidth(M): decode memory-bound up to the knee). The H200
run of 2026-12-02 (examples/h200-2026-12-02) against the prediction made before it from the
2026-11-22 H100 run (examples/h200-prediction) showed that it holds only at small batches:
  kv-pool-memory  -2.6 % (bf16), -2.3 % (fp8): holds.
  tpot-bandwidth  -9 % (bf16), -14 % (fp8) at concurrency 1: roughly holds.
  decode-bandwidth at batch 128: +68 % (bf16: 9,159 predicted, 5,449 measured), fp8 +52 % (at
                  the H200's largest sampled batch): fails. servesweep's two sweeps differ in
                  workload (fixed 512/128 on the H100, lognormal/uniform on the H200), so the size
                  of that miss is not the rule's alone; the independent evidence below is.
  prefill-compute cannot be judged from this evidence: the H100 TTFTs it scaled were measured by a
                  servesweep bug (timed at the first visible text, 1.8-2.7x too high).
Independent evidence (issue 23): `vllm bench serve`, bf16, random 512-token prompts, 128 output
tokens, on both GPUs: H200/H100 output tok/s = 1.27 at concurrency 16, 1.12 at 128, 1.11 at 512
(DECODE_EVIDENCE). The H200 is the H100's chip (same TFLOP/s) with 4,800/3,350 = 1.43x the
bandwidth, so gain = 1 / (m/1.433 + (1 - m)) and m = (1 - 1/gain) / (1 - 1/1.433): m = 0.704 at
batch 16, 0.355 at 128, 0.328 at 512 (DECODE_MEMORY_SHARE); between them m is linear in log(batch),
and outside them it is clamped. Below batch 16 there is no vllm bench figure; servesweep's own
output tok/s at concurrency 1 (not touched by the TTFT bug, but across the two sweeps' different
workloads) was 1.29x (bf16) and 1.21x (fp8), not 1.43x, so m is held at 0.704 rather than raised to 1. Fitted on one model shape (Llama-3-8B, dummy weights,
vLLM 0.25.0) and one workload: another model or prompt/output length moves the split.
`decode-bandwidth` stays in RULES, marked superseded, so that figures made with it (the committed
examples/h200-prediction and examples/h100-llama3-8b table) are recomputed with the rule they
name (`project(..., rules=...)`).

A SKU without FP8 tensor cores gets no fp8 figures (its bf16 figures apply) and bf16 as its preferred
precision (A100, A10G); one with them (H100, H200, L40S, L4) gets fp8 where fp8 passed the accuracy gate
and, where measured, was the fastest (`preferred_precision`). With results from
more than one measured SKU, each is marked measured with its own figures and the other SKUs are
projected from the first (the results directory the report is for).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict

# The rules' file as the result files and reports name it, so a reader can find the rules. (Until
# 2026-12-07 it said reports/skus.py, where they lived before issue 35; the committed results were
# rewritten to this name, the only change, so they still re-render byte-identical.)
RULES_FILE_CITED = "analysis/skus.py"


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
GIB = 1024**3


# --- rules and figures ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    id: str
    text: str

    def __str__(self) -> str:
        return f"{self.id}: {self.text}"


# The decode-roofline rule's evidence (issue 23): `vllm bench serve`, bf16, random 512-token prompts,
# 128 output tokens, Llama-3-8B shape (dummy weights), vLLM 0.25.0: H200 / H100-SXM output tok/s by
# concurrency (= batch). The H200 has the H100's compute and 4,800/3,350 its bandwidth.
DECODE_EVIDENCE: dict[float, float] = {16: 1.27, 128: 1.12, 512: 1.11}
DECODE_REFERENCE = "H100-SXM"  # the SKU whose rates the memory share m is expressed in


def memory_share_from_gain(gain: float, bandwidth_ratio: float) -> float:
    """m solving gain = 1 / (m / bandwidth_ratio + (1 - m)) (equal compute): (1 - 1/gain) / (1 - 1/ratio)."""
    return (1 - 1 / gain) / (1 - 1 / bandwidth_ratio)


# batch -> the memory-bound share of a decode step on an H100-SXM: 0.704 at 16, 0.355 at 128, 0.328 at 512.
DECODE_MEMORY_SHARE: dict[float, float] = {b: memory_share_from_gain(g, 4800 / 3350)
                                           for b, g in sorted(DECODE_EVIDENCE.items())}

RULES: dict[str, Rule] = {r.id: r for r in [
    Rule("decode-roofline", "x T(M)/T(S), a decode step's time T(X) = m/bandwidth(X) + (1-m)/TFLOP/s(X,p) "
                            "(in H100-SXM units), i.e. gain = 1/(m_M/bw ratio + (1-m_M)/compute ratio) with "
                            "m_M the memory-bound share on M; m at the knee batch, linear in log(batch) "
                            "through 0.704 at 16, 0.355 at 128, 0.328 at 512 and clamped outside, fitted "
                            "(issue 23) to vllm bench serve H200/H100 = 1.27, 1.12, 1.11 (bf16, Llama-3-8B "
                            "shape, 512 in / 128 out; one model shape, one workload); assumes the knee "
                            "stays at the same batch. Replaces decode-bandwidth"),
    Rule("decode-bandwidth", "SUPERSEDED by decode-roofline (issue 23: H200 measured 2026-12-02, +68 % bf16 / "
                             "+52 % fp8 at batch 128; holds only at small batches); kept to recompute figures "
                             "made with it. x bandwidth(S)/bandwidth(M); assumes decode stays memory-bound up "
                             "to the knee and the knee stays at the same batch (near the knee compute starts "
                             "to bound it, and a larger KV pool can move the knee)"),
    Rule("tpot-bandwidth", "x bandwidth(M)/bandwidth(S); one sequence's decode step reads every weight once: "
                           "bandwidth-bound, with the same share of per-step overhead"),
    Rule("prefill-compute", "x TFLOP/s(M,p)/TFLOP/s(S,p); prefill is compute-bound and the knee's queueing "
                            "scales with it"),
    Rule("kv-pool-memory", "pool bytes + (memory(S)-memory(M)) x memory fraction, / bytes per token of the "
                           "measured pool; memory(S) = NVML total(M) x datasheet GB(S)/GB(M); assumes weights, "
                           "activations and CUDA graphs take the same bytes on both"),
]}
SUPERSEDED = {"decode-bandwidth": "decode-roofline"}

# metric -> (unit, words, the rule that projects it now)
METRICS: dict[str, tuple[str, str, str]] = {
    "output_tok_s_at_knee": ("tok/s", "output tok/s at the knee", "decode-roofline"),
    "tpot_p50_ms_c1": ("ms", "TPOT p50 at concurrency 1", "tpot-bandwidth"),
    "ttft_p50_ms_at_knee": ("ms", "TTFT p50 at the knee", "prefill-compute"),
    "kv_pool_tokens": ("tokens", "KV pool tokens at the same memory fraction", "kv-pool-memory"),
}
# metric -> the rules that can project it (the current one first)
METRIC_RULES: dict[str, tuple[str, ...]] = {
    "output_tok_s_at_knee": ("decode-roofline", "decode-bandwidth"),
    "tpot_p50_ms_c1": ("tpot-bandwidth",), "ttft_p50_ms_at_knee": ("prefill-compute",),
    "kv_pool_tokens": ("kv-pool-memory",),
}


def current_rules() -> dict[str, str]:
    """id -> text of the rules `project` uses by default (what a new prediction records)."""
    return {METRICS[m][2]: RULES[METRICS[m][2]].text for m in METRICS}


class Figure(BaseModel):
    """One number of the SKU table or of a prediction (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    precision: str
    value: float | None
    unit: str
    basis: Literal["measured", "projected"]
    batch: float | None = None  # the batch size the figure refers to (None: not batch-specific)
    source: str  # the measured file and point, and (projected) the datasheets
    rule_id: str | None = None  # projected figures: a key of RULES
    rule: str | None = None  # "id: text"
    applied: str | None = None  # the rule with this projection's numbers
    note: str | None = None  # why a value is missing, or what it is conditional on


# --- what a measured SKU provides -----------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionMeasurement:
    """One precision's figures on a measured SKU, each with the point it came from ("config/level")."""

    precision: str
    knee_batch: float | None = None
    knee_reached: bool | None = None
    knee_point: str | None = None
    output_tok_s_at_knee: float | None = None
    ttft_p50_ms_at_knee: float | None = None
    tpot_batch: float | None = None  # the smallest sampled batch (1 when concurrency 1 was run)
    tpot_point: str | None = None
    tpot_p50_ms_c1: float | None = None
    kv_pool_tokens: float | None = None
    kv_pool_bytes: float | None = None
    memory_fraction: float | None = None
    device_mem_total_bytes: float | None = None
    # Output tok/s at the batch every precision reached: what picks the preferred precision.
    preference_throughput: float | None = None
    # batch -> (output tok/s, TTFT p50 ms, point), the best point per batch: for same-batch comparisons.
    by_batch: dict[float, tuple[float | None, float | None, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SkuMeasurement:
    """A sweep's figures on one SKU: `source` names the file they came from (a points.jsonl)."""

    sku: str
    source: str
    gpu_name: str | None = None
    by_precision: dict[str, PrecisionMeasurement] = field(default_factory=dict)


# --- the rules as arithmetic (pure: the tests check these by hand) ----------------------------------
def decode_bandwidth(value: float, measured: Sku, target: Sku) -> float:
    return value * target.bandwidth_gb_s / measured.bandwidth_gb_s


def memory_share(batch: float | None) -> float:
    """The memory-bound share of a decode step on the reference SKU at `batch`: DECODE_MEMORY_SHARE,
    linear in log(batch) between its batches, clamped outside them (None: the smallest batch's)."""
    points = sorted(DECODE_MEMORY_SHARE.items())
    if batch is None or batch <= points[0][0]:
        return points[0][1]
    if batch >= points[-1][0]:
        return points[-1][1]
    for (b0, m0), (b1, m1) in zip(points, points[1:]):
        if b0 <= batch <= b1:
            return m0 + (m1 - m0) * math.log(batch / b0) / math.log(b1 / b0)
    raise AssertionError("unreachable")


def _compute_rate(sku: Sku, precision: str) -> float:
    """TFLOP/s at `precision`, or bf16's where the SKU has no such tensor path (weight-only FP8 runs
    bf16 matmuls)."""
    return sku.tflops.get(precision) or sku.tflops["bf16"]  # type: ignore[return-value]


def decode_step_time(sku: Sku, precision: str, batch: float | None) -> float:
    """T(X) = m / bandwidth(X) + (1 - m) / TFLOP/s(X, p), with both rates relative to the reference
    SKU's (so T = 1 on the reference SKU)."""
    ref = SKUS[DECODE_REFERENCE]
    m = memory_share(batch)
    return (m * ref.bandwidth_gb_s / sku.bandwidth_gb_s
            + (1 - m) * _compute_rate(ref, precision) / _compute_rate(sku, precision))


def decode_roofline_terms(measured: Sku, target: Sku, precision: str, batch: float | None
                          ) -> tuple[float, float, float, float]:
    """(gain, m_M, bandwidth ratio S/M, compute ratio S/M): gain = 1 / (m_M / bw + (1 - m_M) / compute)."""
    ref = SKUS[DECODE_REFERENCE]
    m = memory_share(batch)
    t_m = decode_step_time(measured, precision, batch)
    m_m = m * ref.bandwidth_gb_s / measured.bandwidth_gb_s / t_m
    bw = target.bandwidth_gb_s / measured.bandwidth_gb_s
    compute = _compute_rate(target, precision) / _compute_rate(measured, precision)
    return t_m / decode_step_time(target, precision, batch), m_m, bw, compute


def decode_roofline(value: float, measured: Sku, target: Sku, precision: str, batch: float | None) -> float:
    return value * decode_roofline_terms(measured, target, precision, batch)[0]


def tpot_bandwidth(value: float, measured: Sku, target: Sku) -> float:
    return value * measured.bandwidth_gb_s / target.bandwidth_gb_s


def prefill_compute(value: float, measured: Sku, target: Sku, precision: str) -> float | None:
    m, s = measured.tflops.get(precision), target.tflops.get(precision)
    return value * m / s if m and s else None


def target_memory_bytes(measured: Sku, target: Sku, measured_total_bytes: float | None) -> float:
    """Device memory of S: M's NVML total scaled by the datasheets' ratio (GiB x datasheet GB without one)."""
    if measured_total_bytes:
        return measured_total_bytes * target.memory_gb / measured.memory_gb
    return target.memory_gb * GIB


def kv_pool_memory(pool_tokens: float, pool_bytes: float, fraction: float, measured: Sku, target: Sku,
                   measured_total_bytes: float | None) -> tuple[float, float]:
    """(tokens, bytes) of S's KV pool at the same memory fraction; tokens <= 0 means it does not fit."""
    m_total = measured_total_bytes or measured.memory_gb * GIB
    s_total = target_memory_bytes(measured, target, measured_total_bytes)
    s_bytes = pool_bytes + (s_total - m_total) * fraction
    return s_bytes / (pool_bytes / pool_tokens), s_bytes


# --- figures ---------------------------------------------------------------------------------------
def _point_source(meas: SkuMeasurement, point: str | None) -> str:
    return f"{meas.sku} measured: {meas.source}" + (f" ({point})" if point else "")


def measured_figures(meas: SkuMeasurement) -> dict[str, dict[str, Figure]]:
    """precision -> metric -> the measured figure."""
    out: dict[str, dict[str, Figure]] = {}
    for p, m in meas.by_precision.items():
        def fig(metric: str, value: float | None, batch: float | None, point: str | None,
                note: str | None = None) -> Figure:
            return Figure(metric=metric, precision=p, value=value, unit=METRICS[metric][0], basis="measured",
                          batch=batch, source=_point_source(meas, point), note=note)

        knee_note = None if m.knee_reached else "knee not reached: the largest sampled batch"
        tpot_note = None if m.tpot_batch in (None, 1) else f"no concurrency-1 point: batch {m.tpot_batch:g}"
        out[p] = {
            "output_tok_s_at_knee": fig("output_tok_s_at_knee", m.output_tok_s_at_knee, m.knee_batch, m.knee_point,
                                        knee_note),
            "tpot_p50_ms_c1": fig("tpot_p50_ms_c1", m.tpot_p50_ms_c1, m.tpot_batch, m.tpot_point, tpot_note),
            "ttft_p50_ms_at_knee": fig("ttft_p50_ms_at_knee", m.ttft_p50_ms_at_knee, m.knee_batch, m.knee_point,
                                       knee_note),
            "kv_pool_tokens": fig("kv_pool_tokens", m.kv_pool_tokens, None, m.knee_point,
                                  f"memory fraction {m.memory_fraction:g}" if m.memory_fraction else None),
        }
    return out


def project(meas: SkuMeasurement, target: Sku, rules: dict[str, str] | None = None) -> dict[str, dict[str, Figure]]:
    """precision -> metric -> the figure projected onto `target` from `meas` by RULES: each metric's
    current rule (METRICS), or the rule `rules` names for it (e.g. a superseded one, to recompute a
    figure made with it)."""
    use = {metric: (rules or {}).get(metric) or METRICS[metric][2] for metric in METRICS}
    for metric, rid in use.items():
        if rid not in METRIC_RULES[metric]:
            raise ValueError(f"project: {rid!r} does not project {metric} (rules: {METRIC_RULES[metric]})")
    base = SKUS[meas.sku]
    datasheets = base.source if base.source == target.source else f"{base.source}; {target.source}"
    out: dict[str, dict[str, Figure]] = {}
    for p, m in meas.by_precision.items():
        if p == "fp8" and not target.fp8:
            continue  # no FP8 path on the target: its bf16 projection applies
        bw = f"{target.bandwidth_gb_s:g}/{base.bandwidth_gb_s:g}"

        def fig(metric: str, value: float | None, batch: float | None, point: str | None, applied: str,
                note: str | None = None) -> Figure:
            rule = RULES[use[metric]]
            return Figure(metric=metric, precision=p, value=value, unit=METRICS[metric][0], basis="projected",
                          batch=batch, source=f"{_point_source(meas, point)}; datasheets: {datasheets}",
                          rule_id=rule.id, rule=str(rule), applied=applied, note=note)

        knee_note = None if m.knee_reached else f"{meas.sku}'s knee not reached: its largest sampled batch"
        tput = m.output_tok_s_at_knee
        if use["output_tok_s_at_knee"] == "decode-bandwidth":
            figs = {"output_tok_s_at_knee": fig(
                "output_tok_s_at_knee", decode_bandwidth(tput, base, target) if tput is not None else None,
                m.knee_batch, m.knee_point, f"{_num(tput)} tok/s x bandwidth {bw} GB/s", knee_note)}
        else:
            gain, m_m, bw_r, c_r = decode_roofline_terms(base, target, p, m.knee_batch)
            at = "batch -" if m.knee_batch is None else f"batch {m.knee_batch:g}"
            figs = {"output_tok_s_at_knee": fig(
                "output_tok_s_at_knee", tput * gain if tput is not None else None, m.knee_batch, m.knee_point,
                f"{_num(tput)} tok/s x 1/({m_m:.3f}/{bw_r:.3f} + {1 - m_m:.3f}/{c_r:.3f}) = x {gain:.3f} "
                f"(memory share {m_m:.3f} on {base.name} at {at}; bandwidth {bw} GB/s, {p} TFLOP/s "
                f"{_compute_rate(target, p):g}/{_compute_rate(base, p):g})", knee_note)}
        tpot = m.tpot_p50_ms_c1
        figs["tpot_p50_ms_c1"] = fig(
            "tpot_p50_ms_c1", tpot_bandwidth(tpot, base, target) if tpot is not None else None, m.tpot_batch,
            m.tpot_point, f"{_num(tpot, 3)} ms x bandwidth {base.bandwidth_gb_s:g}/{target.bandwidth_gb_s:g} GB/s")
        ttft = m.ttft_p50_ms_at_knee
        sm, ss = base.tflops.get(p), target.tflops.get(p)
        # e.g. fp8 measured on an A100 (weight-only FP8 kernels): no FP8 tensor-core rate to scale by.
        no_rate = None if sm and ss else f"no {p} tensor-core rate on {base.name if not sm else target.name}"
        figs["ttft_p50_ms_at_knee"] = fig(
            "ttft_p50_ms_at_knee", prefill_compute(ttft, base, target, p) if ttft is not None else None,
            m.knee_batch, m.knee_point, f"{_num(ttft, 1)} ms x {p} TFLOP/s {sm}/{ss}", no_rate or knee_note)
        figs["kv_pool_tokens"] = _kv_figure(fig, m, base, target)
        out[p] = figs
    return out


def _kv_figure(fig: Any, m: PrecisionMeasurement, base: Sku, target: Sku) -> Figure:
    if not (m.kv_pool_tokens and m.kv_pool_bytes and m.memory_fraction):
        return fig("kv_pool_tokens", None, None, m.knee_point, "-", "no KV pool size or memory fraction measured")
    tokens, pool_bytes = kv_pool_memory(m.kv_pool_tokens, m.kv_pool_bytes, m.memory_fraction, base, target,
                                        m.device_mem_total_bytes)
    m_total = m.device_mem_total_bytes or base.memory_gb * GIB
    s_total = target_memory_bytes(base, target, m.device_mem_total_bytes)
    applied = (f"({m.kv_pool_bytes / GIB:.2f} GiB + ({s_total / GIB:.2f} - {m_total / GIB:.2f}) GiB x "
               f"{m.memory_fraction:g}) / {m.kv_pool_bytes / m.kv_pool_tokens:,.0f} B per token")
    if tokens <= 0:
        return fig("kv_pool_tokens", None, None, m.knee_point, applied,
                   f"does not fit: the projected pool is {pool_bytes / GIB:.1f} GiB at memory fraction "
                   f"{m.memory_fraction:g}")
    # Whole tokens: a pool holds no fraction of one (vLLM rounds further, down to whole blocks).
    return fig("kv_pool_tokens", float(math.floor(tokens)), None, m.knee_point, applied,
               f"memory fraction {m.memory_fraction:g}")


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# --- the table -------------------------------------------------------------------------------------
def sku_from_gpu_name(name: str | None) -> str | None:
    """Map an NVML device name (e.g. 'NVIDIA H100 80GB HBM3') to a key of SKUS."""
    if not name:
        return None
    n = name.upper()
    # Variants whose memory, bandwidth or clocks match no row of SKUS (GH200's GPU: 96 GB HBM3 or
    # 144 GB HBM3e; H100 NVL: 94 GB at 3.9 TB/s; H200 NVL: lower power and TFLOP/s): no figures
    # rather than another card's, which would be labelled measured on the wrong SKU.
    if "GH200" in n or "NVL" in n:
        return None
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
    """(precision, reason) for one SKU; measured throughputs decide where they exist.

    FP8 is preferred only on a SKU with FP8 tensor cores (Hopper, Ada: H100, H200, L40S, L4), and
    there only when it passed the accuracy gate and, where measured, was the fastest. A SKU without
    them (A100, A10G) gets bf16: an fp8 run there is weight-only FP8 with bf16 matmuls, not the FP8
    path this table is about, so a measured fp8 figure on such a SKU is shown but never preferred."""
    gate_passed = gate_passed or {}
    if measured:
        candidates = {p: t for p, t in measured.items() if t and gate_passed.get(p, True)
                      and (p != "fp8" or sku.fp8)}
        if candidates:
            best = max(candidates, key=candidates.get)
            others = ", ".join(f"{p} {t:,.0f}" for p, t in sorted(measured.items()) if t)
            why = f"highest measured output throughput on this SKU (tok/s: {others})"
            if not sku.fp8 and measured.get("fp8"):
                why += ("; fp8 not considered: no FP8 tensor cores (compute capability "
                        f"{sku.compute_capability[0]}.{sku.compute_capability[1]}), weight-only FP8")
            return best, why
    if sku.fp8 and gate_passed.get("fp8", True):
        return "fp8", (f"FP8 tensor cores (compute capability {sku.compute_capability[0]}.{sku.compute_capability[1]}):"
                       f" {sku.tflops['fp8']:g} vs {sku.tflops['bf16']:g} dense TFLOP/s for bf16, and half the weight"
                       " bytes per decoded token; subject to the accuracy gate")
    return "bf16", (f"no FP8 tensor cores (compute capability {sku.compute_capability[0]}.{sku.compute_capability[1]});"
                    " bf16 keeps fp32's exponent range (fp16 can overflow) at the full tensor-core rate")


def datasheet(sku: Sku) -> dict[str, Any]:
    """A SKU's datasheet figures as written in result files (compute capability as "9.0")."""
    return asdict(sku) | {"compute_capability": f"{sku.compute_capability[0]}.{sku.compute_capability[1]}"}


def _dump(figures: dict[str, dict[str, Figure]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {p: {k: f.model_dump() for k, f in per.items()} for p, per in figures.items()}


def sku_table(measurements: Sequence[SkuMeasurement], memory_needed_bytes: float | None,
              gate_passed: dict[str, bool] | None = None, wanted: list[str] | None = None,
              recommended: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """`sku_to_preferred_precision`: one entry per SKU. Every SKU in `measurements` is `measured`
    with its own figures; the rest are `projected` from the first measurement (none: from the
    datasheets' FP8 support alone, with no figures). `recommended` (sku, precision, why): the
    production recommendation of the sweep measured on that SKU, which its entry follows."""
    measured = {m.sku: m for m in measurements}
    if len(measured) != len(measurements):
        raise ValueError("sku_table: two measurements of the same SKU")
    unknown = [m.sku for m in measurements if m.sku not in SKUS]
    if unknown:
        raise ValueError(f"sku_table: measured SKU without datasheet figures: {unknown}")
    base = measurements[0] if measurements else None
    names = list(SKUS)
    for extra in wanted or []:
        if extra not in names:
            names.append(extra)
    table: dict[str, Any] = {}
    for name in names:
        sku = SKUS.get(name)
        if sku is None:
            table[name] = {"precision": None, "reason": "unknown SKU: no datasheet figures in servesweep",
                           "basis": "projected"}
            continue
        meas = measured.get(name)
        throughput = ({p: m.preference_throughput for p, m in meas.by_precision.items()} if meas else None)
        precision, reason = preferred_precision(sku, throughput, gate_passed)
        if meas is not None and recommended is not None and recommended[0] == name and recommended[1] != precision:
            # The comparison at one common batch can read one noisy window; the recommendation
            # weighed every point against the SLOs: the table must not contradict it.
            precision, reason = recommended[1], f"{recommended[2]}; the throughput rule alone would pick {precision}: {reason}"
        entry: dict[str, Any] = {"precision": precision, "reason": reason,
                                 "basis": "measured" if meas else "projected", "datasheet": datasheet(sku)}
        if memory_needed_bytes:
            entry["fits_memory"] = memory_needed_bytes <= sku.memory_gb * 1e9 * 0.9
        if meas is not None:
            entry["source"] = meas.source
            entry["figures"] = _dump(measured_figures(meas))
        elif base is not None:
            entry["source"] = f"projected from {base.sku} ({base.source}) by {RULES_FILE_CITED} RULES"
            entry["figures"] = _dump(project(base, sku))
        table[name] = entry
    return table
