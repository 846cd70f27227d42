"""From sweep points to answers: the knee, precision ratios, the best config, a recommendation.

Definitions (also in the README):
  batch size       the configured batch of a point: min(client concurrency, max batch size: vLLM's
                   max_num_seqs, TensorRT-LLM's max_batch_size); for
                   open-loop points, the peak running batch the server reported. The measured
                   mean running batch (vLLM's num_requests_running) is reported beside it.
  knee             the first sampled batch size after which one more batch slot adds less than
                   KNEE_THRESHOLD (10 %) of the output throughput one slot delivers at the
                   smallest sampled batch. The marginal throughput per added GiB of KV cache at
                   peak is reported for the same segments. If the threshold is never crossed the
                   knee is the largest sampled batch and `knee_reached` is false.
  memory needed    weights (parameter count x bytes per parameter at the precision) + KV cache
                   at peak; a lower bound that leaves out activations and CUDA graphs. With a
                   GPU, the device memory peak from NVML is reported beside it.
  memory at load   what the configuration needs to serve its load, the figure the VRAM budget is
                   judged on: the measured non-KV memory (device memory peak - KV pool: weights,
                   activations, CUDA graphs, context) + the KV cache the sizing would give it
                   (KV peak at that load / (1 - TARGET_MARGIN_PCT), sweep/sizing.py). Not the
                   device peak: vLLM preallocates gpu_memory_utilization x the device for its
                   KV pool whatever the load, so the peak says how big the GPU was, not what
                   the load needs. Without device figures (CPU), `memory needed`.
  meets SLOs       the scenario's SLO percentile (default p99) of each limited metric is within
                   its limit, and no request failed.
  goodput          requests per second that met every SLO; without SLOs, request throughput.
  OOM margin band  5-40 %: below, long or unusual requests will hit preemption or OOM; above,
                   memory is reserved that the load never touches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from servesweep.models.shape import read_model_shape
from servesweep.analysis.energy_per_token import energy_figures
from servesweep.analysis.knee import GIB, find_knee
from servesweep.precision import PRECISION_NAMES
from servesweep.memory_fraction import exact_fraction, non_kv_from_fraction
from servesweep.results.points import SweepPoint, knob_names, memory_fraction_of
from servesweep.results.summary import Summary, WindowTelemetry
from servesweep.results.headroom import Headroom
from servesweep.results.recommendation import (
    BatchSweep,
    CombinedSweep,
    DriftScores,
    GateEntry,
    Knee,
    NoRecommendation,
    PrecisionEntry,
    ProductionRecommendation,
)
from servesweep.results.verification import Verification, new_verification
from servesweep.thresholds import KNEE_THRESHOLD, MARGIN_BAND, TARGET_MARGIN_PCT

PRECISION_ORDER = list(PRECISION_NAMES)  # highest precision first


def weights_bytes(model_dir: str | Path, precision: str) -> int | None:
    shape = read_model_shape(model_dir)
    return shape.weights_bytes(precision) if shape else None


def points_frame(points: list[SweepPoint], slo: Mapping[str, Any] | None = None,
                 model_dir: str | None = None) -> pd.DataFrame:
    """One row per point, failed points included (with their cause), read through SweepPoint's
    typed views: a figure an older file lacks is None. With repeats, the throughputs and goodput
    are the means over the repeats (the summary's headline view)."""
    rows = []
    limits = dict(slo or {})
    percentile = limits.pop("percentile", 99)
    for point in points:
        spec, load, s, t = point.spec, point.load, point.figures, point.server_telemetry
        conc, seqs = load.concurrency, spec.max_batch_size
        batch = min(conc, seqs) if conc and seqs else conc
        if batch is None and t.running_batch_peak is not None:
            batch = int(t.running_batch_peak)
        row = {
            "config": point.config, "level": point.level, "status": point.status, "cause": point.cause,
            "kind": spec.kind, "knobs": knob_names(point.server), "memory_fraction_of": memory_fraction_of(point.server),
            "precision": spec.precision, "max_batch_size": seqs, "kv_cache_dtype": spec.kv_cache_dtype,
            "memory_fraction": spec.memory_fraction, "concurrency": conc,
            "request_rate": load.request_rate, "batch": batch,
            "running_batch_mean": t.running_batch_mean, "running_batch_peak": t.running_batch_peak,
            "completed": _as_read(s, "completed"), "failed": _as_read(s, "failed"),
            "request_throughput": s.headline_request_throughput,
            "output_token_throughput": s.headline_output_token_throughput,
            "total_token_throughput": s.total_token_throughput,
            "kv_cache_peak_frac": t.kv_cache_peak_frac, "kv_cache_peak_bytes": t.kv_cache_peak_bytes,
            "kv_pool_bytes": t.kv_pool_bytes, "preemptions": t.preemptions,
            "oom_margin_pct": t.oom_margin_pct, "device_mem_peak_bytes": t.device_mem_peak_bytes,
            "device_mem_total_bytes": t.device_mem_total_bytes,
            "gpu_power_w": t.gpu_power_mean_w,
            "suspect": point.timing_suspect,
        }
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            for q in ("p50", "p90", "p99"):
                row[f"{metric[:-3]}_{q}_ms"] = s.quantile(metric, q)
        good = s.headline_request_goodput
        row["goodput"] = good if good is not None else s.headline_request_throughput
        energy = energy_figures(t.gpu_power_mean_w, s.headline_output_token_throughput)
        row["j_per_output_token"] = energy["j_per_output_token"] if energy else None
        wb = weights_bytes(model_dir or spec.model, spec.precision)
        row["weights_bytes"] = wb
        kv = t.kv_cache_peak_bytes
        row["memory_needed_bytes"] = (wb or 0) + (kv or 0) if wb is not None else None
        row["memory_at_load_bytes"] = memory_at_load(t, row["memory_needed_bytes"])
        meets = point.status == "ok" and not s.failed
        for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
            limit = limits.get(metric)
            value = s.quantile(metric, f"p{percentile}")
            if limit is not None and (value is None or value > limit):
                meets = False
        row["meets_slo"] = bool(meets)
        rows.append(row)
    return pd.DataFrame(rows)


def _as_read(summary: Summary, name: str) -> Any:
    """A count as the point's file holds it: None where it has none (a point that did not run)."""
    return getattr(summary, name) if name in summary.model_fields_set else None


def memory_at_load(telemetry: WindowTelemetry, lower_bound: float | None) -> float | None:
    """Memory the configuration needs at its load (module docstring): measured non-KV bytes + the
    KV peak sized to the band's middle; `lower_bound` (weights + KV peak) without device figures."""
    peak, pool, kv = telemetry.device_mem_peak_bytes, telemetry.kv_pool_bytes, telemetry.kv_cache_peak_bytes
    if peak is None or pool is None or kv is None or peak <= pool:
        return lower_bound
    return float(peak - pool + kv / (1.0 - TARGET_MARGIN_PCT / 100.0))


def batch_sweep(df: pd.DataFrame) -> BatchSweep:
    ok = df[(df.status == "ok") & df.batch.notna()]
    by_precision = {}
    for precision, group in ok.groupby("precision"):
        # Several configs can share a batch size (e.g. max batch x concurrency): keep the best.
        best = group.sort_values("output_token_throughput").groupby("batch").tail(1).sort_values("batch")
        knee = find_knee(best.batch.tolist(), best.output_token_throughput.tolist(),
                         best.kv_cache_peak_bytes.tolist())
        knee["points"] = best[["batch", "config", "level", "running_batch_mean", "output_token_throughput",
                               "kv_cache_peak_bytes"]].to_dict("records")
        knee["distinct_batch_sizes"] = int(best.batch.nunique())
        by_precision[precision] = Knee.model_validate(knee)
    failed = df[df.status == "failed"][["config", "level", "batch", "cause"]].to_dict("records")
    primary = next((p for p in ["bf16", "fp16", "fp8", "fp32"] if p in by_precision), None)
    return BatchSweep(
        points=ok[["precision", "batch", "config", "level", "running_batch_mean", "output_token_throughput",
                   "request_throughput", "kv_cache_peak_bytes"]].to_dict("records"),
        knee_batch_size=by_precision[primary].knee_batch_size if primary else None,
        knee_precision=primary,
        by_precision=by_precision,
        failed_points=failed,
        definition=f"first batch after which one more slot adds < {KNEE_THRESHOLD:.0%} of the first slot's throughput",
    )


def precision_sweep(df: pd.DataFrame, drift: dict[str, DriftScores] | None = None) -> dict[str, PrecisionEntry]:
    """Throughput per precision at the largest batch every precision reached, vs fp32."""
    ok = df[(df.status == "ok") & df.batch.notna()]
    precisions = [p for p in PRECISION_ORDER if p in set(ok.precision)]
    if not precisions:
        return {}
    common = set.intersection(*(set(ok[ok.precision == p].batch) for p in precisions))
    batch = max(common) if common else None
    out: dict[str, PrecisionEntry] = {}
    for p in precisions:
        rows = ok[(ok.precision == p) & (ok.batch == batch)] if batch is not None else ok[ok.precision == p]
        out[p] = PrecisionEntry(batch=batch, throughput=float(rows.output_token_throughput.max()) if len(rows) else None)
    base = out["fp32"].throughput if "fp32" in out else None
    for p, entry in out.items():
        tput = entry.throughput
        entry.speedup_vs_fp32 = (tput / base) if base and tput else None
        scores = drift[p] if drift and p in drift else DriftScores()
        entry.token_agreement = scores.token_agreement
        entry.logprob_cosine = scores.logprob_cosine
        entry.drift_reference = scores.reference
    return out


def gate_exclusions(gates: list[GateEntry] | None) -> dict[str, str]:
    """Precision -> why the accuracy gate excludes it: a configuration of that precision failed the
    gate unloaded, or under load. A verdict that could not be measured neither vetoes nor clears."""
    reasons: dict[str, list[str]] = {}
    for g in gates or []:
        if g.status == "failed":
            reasons.setdefault(g.precision, []).append(f"failed the accuracy gate ({g.message})")
        if g.status_under_load == "failed":
            reasons.setdefault(g.precision, []).append(f"failed the accuracy gate under load "
                                                       f"({g.message_under_load})")
    return {p: "; ".join(r) for p, r in reasons.items()}


def gate_passed_by_precision(gates: list[GateEntry] | None) -> dict[str, bool] | None:
    """Precision -> whether it passed every gate verdict that was measured (None: none measured)."""
    failing = gate_exclusions(gates)
    measured = {g.precision for g in gates or []
                if g.status not in (None, "error") or g.status_under_load not in (None, "error")}
    return {p: p not in failing for p in measured} or None


def combined_sweep(df: pd.DataFrame, vram_budget_bytes: float | None,
                   gate_failed: Mapping[str, str] | set[str] | frozenset[str] = frozenset()) -> CombinedSweep:
    """Best point within SLOs and the VRAM budget, among precisions that did not fail the accuracy gate
    (`gate_failed`: those precisions, or precision -> why, as `gate_exclusions` gives)."""
    reasons = dict(gate_failed) if isinstance(gate_failed, Mapping) else {p: "failed the accuracy gate"
                                                                          for p in gate_failed}
    ok = df[df.status == "ok"].copy()
    if "memory_at_load_bytes" not in ok.columns:  # a table built without telemetry: weights + KV only
        ok["memory_at_load_bytes"] = ok.get("memory_needed_bytes")
    cols = ["config", "level", "precision", "batch", "goodput", "output_token_throughput", "meets_slo",
            "memory_needed_bytes", "memory_at_load_bytes", "device_mem_peak_bytes"]
    fits = np.ones(len(ok), dtype=bool)
    if vram_budget_bytes is not None:
        # What the load needs, not what vLLM preallocated (module docstring, "memory at load").
        need = pd.to_numeric(ok.memory_at_load_bytes, errors="coerce")
        fits = (need <= vram_budget_bytes).fillna(False).to_numpy()
    ok["fits_budget"] = fits
    baseline_rows = ok[(ok.precision == "fp32")]
    baseline = None
    if len(baseline_rows):
        first = baseline_rows.sort_values(["batch", "output_token_throughput"], ascending=[True, False]).iloc[0]
        baseline = first[cols].to_dict()
    eligible = ok[ok.meets_slo & ok.fits_budget & ~ok.precision.isin(list(reasons))]
    best = None
    if len(eligible):
        best = eligible.sort_values(["goodput", "output_token_throughput"], ascending=False).iloc[0][cols + ["fits_budget"]].to_dict()
    speedup = None
    if best and baseline and baseline["goodput"]:
        speedup = {"goodput": best["goodput"] / baseline["goodput"],
                   "output_token_throughput": best["output_token_throughput"] / baseline["output_token_throughput"]}
    return CombinedSweep(
        points=ok[cols + ["fits_budget"]].to_dict("records"),
        baseline=baseline,
        best_config=best,
        speedup_vs_baseline=speedup,
        vram_budget_bytes=vram_budget_bytes,
        excluded_by_budget=ok[~ok.fits_budget].config.unique().tolist(),
        excluded_by_accuracy_gate=sorted(reasons),
        accuracy_gate_exclusions=reasons,
    )


def no_recommendation(df: pd.DataFrame, combined: CombinedSweep) -> NoRecommendation:
    """Why `combined_sweep` found no best point, in the order the filters apply: nothing measured,
    no point met the SLOs, none of those fits the VRAM budget, the accuracy gate excluded the rest.
    `reason` is one line for the console banner; `detail` names the figures behind it."""
    ok = df[df.status == "ok"] if len(df) else df
    detail: list[str] = []
    if not len(ok):
        causes = sorted({str(c) for c in df.get("cause", pd.Series(dtype=object)).dropna()})
        return NoRecommendation(reason=f"no point was measured ({len(df)} failed)",
                                detail=[f"causes: {', '.join(causes)}"] if causes else [])
    if "suspect" in ok and ok.suspect.fillna(False).astype(bool).any():
        detail.append(f"{int(ok.suspect.fillna(False).astype(bool).sum())} of {len(ok)} point(s) marked suspect "
                      "by the timing cross-check")
    meets = ok[ok.meets_slo]
    if not len(meets):
        best = ok.sort_values("ttft_p99_ms").iloc[0]
        detail.append(f"lowest TTFT p99: {best.ttft_p99_ms:.0f} ms ({best.config} {best.level}); lowest TPOT p99: "
                      f"{ok.tpot_p99_ms.min():.1f} ms; failed requests in {int((ok.failed.fillna(0) > 0).sum())} point(s)")
        return NoRecommendation(reason=f"no point met the SLOs ({len(ok)} measured)", detail=detail)
    budget = combined.vram_budget_bytes
    fitting = [p for p in combined.points if p["meets_slo"] and p["fits_budget"]]
    if not fitting and budget is not None:
        need = pd.to_numeric(meets.get("memory_at_load_bytes", meets.get("memory_needed_bytes")), errors="coerce")
        if need.notna().any():
            i = need.idxmin()
            detail.append(f"smallest memory at load among them: {need[i] / GIB:.1f} GiB ({meets.config[i]} "
                          f"{meets.level[i]})")
        else:
            detail.append("their memory at load was not measured")
        return NoRecommendation(reason=f"{len(meets)} point(s) met the SLOs but none fits the VRAM budget of "
                                       f"{budget / GIB:g} GiB", detail=detail)
    excluded = combined.accuracy_gate_exclusions
    detail += [f"{p}: {why}" for p, why in excluded.items()]
    return NoRecommendation(reason="every point that met the SLOs within the budget is of a precision the accuracy "
                                   "gate excluded", detail=detail)


def _margin_text(pct: float | None) -> str:
    return f"{pct:.1f} %" if pct is not None else "an unrecorded margin"


def margin_advice(margin: float | None, preempted: bool, knobs: dict[str, str] | None = None) -> dict[str, Any]:
    """Which side of the OOM-margin band a point falls on, and what to change, in the words of
    the server's own knobs (recorded with each point by its backend)."""
    low, high = MARGIN_BAND
    k = knobs or knob_names(None)
    batch, memory = k["max_batch_size"], k["memory_fraction"]
    if margin is None:
        return {"in_band": None, "direction": "unknown", "advice": "no KV-cache telemetry: margin unknown"}
    if preempted or margin < low:
        return {"in_band": False, "direction": "too tight",
                "advice": f"KV cache nearly full or preempting at peak: lower {batch} or max_model_len, "
                          f"or raise {memory}"}
    if margin > high:
        return {"in_band": False, "direction": "too loose",
                "advice": f"more than 40 % of the KV pool unused at peak: raise {batch} / target concurrency, "
                          f"or lower {memory} to hand the memory to something else"}
    return {"in_band": True, "direction": "in band", "advice": "keep"}


def production_recommendation(df: pd.DataFrame, combined: CombinedSweep, batch: BatchSweep,
                              sku: str | None, gpu_name: str | None) -> ProductionRecommendation | None:
    best = combined.best_config
    if not best:
        return None
    row = df[(df.config == best["config"]) & (df.level == best["level"])].iloc[0]
    margin = row.oom_margin_pct if pd.notna(row.oom_margin_pct) else None
    preempted = bool(row.preemptions) if pd.notna(row.preemptions) else False
    seqs = row.max_batch_size if pd.notna(row.max_batch_size) else None
    knee = batch.by_precision[row.precision].knee_batch_size if row.precision in batch.by_precision else None
    knobs = row.knobs
    max_batch = int(seqs) if seqs is not None else (int(row.batch) if pd.notna(row.batch) else None)
    fraction = row.memory_fraction if pd.notna(row.memory_fraction) else None
    rec = {
        "sku": sku,
        "measured_on": gpu_name or "CPU",
        "server_kind": row.kind,
        "precision": row.precision,
        "max_batch_size": max_batch,
        "max_batch_size_source": "configured" if seqs is not None else "batch the best point ran at (server default cap)",
        "knee_batch_size": knee,
        "concurrency": int(row.concurrency) if pd.notna(row.concurrency) else None,
        "memory_fraction": fraction,
        # The same two settings under the server's own names (vLLM: max_num_seqs, gpu_memory_utilization).
        knobs["max_batch_size"]: max_batch,
        knobs["memory_fraction"]: fraction,
        "knobs": knobs,
        "kv_cache_dtype": row.kv_cache_dtype,
        "expected": {
            "request_throughput": row.request_throughput, "output_token_throughput": row.output_token_throughput,
            "goodput": row.goodput, "ttft_p50_ms": row.ttft_p50_ms, "ttft_p99_ms": row.ttft_p99_ms,
            "tpot_p50_ms": row.tpot_p50_ms, "tpot_p99_ms": row.tpot_p99_ms, "e2e_p99_ms": row.e2e_p99_ms,
        },
        "kv_cache_peak_bytes": row.kv_cache_peak_bytes if pd.notna(row.kv_cache_peak_bytes) else None,
        "energy": energy_figures(row.gpu_power_w, row.output_token_throughput),
        "oom_margin_pct": margin,
        "oom_margin_band_pct": list(MARGIN_BAND),
        "based_on": {"config": row.config, "level": row.level,
                     "points_compared": int((df.status == "ok").sum())},
    }
    rec.update(margin_advice(margin, preempted, knobs))
    # With device totals, the fraction that would put peak KV use at ~80 % of the pool, by the
    # server's own rule (of the device for vLLM, of the memory free after loading for TensorRT-LLM).
    if (margin is not None and not rec["in_band"] and pd.notna(row.kv_cache_peak_bytes)
            and pd.notna(row.device_mem_total_bytes) and pd.notna(row.kv_pool_bytes) and fraction):
        of = row.memory_fraction_of
        non_kv = non_kv_from_fraction(of, fraction, row.device_mem_total_bytes, row.kv_pool_bytes)
        target_pool = row.kv_cache_peak_bytes / 0.8
        rec[f"suggested_{knobs['memory_fraction']}"] = round(float(
            exact_fraction(of, target_pool, row.device_mem_total_bytes, non_kv)), 3)
    return ProductionRecommendation.model_validate(rec)


def apply_verification(rec: ProductionRecommendation, verification: Verification | None) -> None:
    """Fold the verification run (servesweep.sweep.verify_run) into the recommendation: the sizing it
    passed with, and the OOM margin it measured under the stress run (p99 lengths, bursty
    arrivals), which is what production peaks look like; the sweep's own margin stays beside it."""
    rec.sweep_oom_margin_pct = rec.oom_margin_pct
    based = rec.based_on
    if verification is not None and verification.attempts and (
            verification.config not in (None, based.config) or verification.level not in (None, based.level)):
        # Points measured after the verification (another precision) moved the recommendation.
        verification = new_verification(
            passed=False, skipped=f"the verification is of {verification.config} {verification.level or ''}, the "
            f"recommendation is now {based.config} {based.level}: run the sweep again to verify it",
            stale=verification.to_file())
    if verification is None or not verification.attempts:
        rec.verified = False
        rec.verification = verification or new_verification(
            passed=False, skipped="not run (servesweep sweep --no-verify, or the sweep has not finished)")
        return
    last = verification.attempts[-1]
    sizing, stress, traffic = last.sizing, last.stress, last.traffic
    knobs = rec.knob_names()
    rec.verified = verification.passed
    rec.verification = verification
    rec.kv_cache_memory_bytes = sizing.kv_cache_memory_bytes
    rec.max_batch_size = sizing.max_num_seqs
    rec.set_server_knob(knobs["max_batch_size"], sizing.max_num_seqs)
    # The equivalent fraction as the server's backend computed it by its own rule (files written
    # before backends owned their knobs call it gpu_memory_utilization).
    fraction = sizing.fraction
    if fraction is not None:
        rec.memory_fraction = fraction
        rec.set_server_knob(knobs["memory_fraction"], fraction)
    # Every knob of the server's own, with its backend's value (TensorRT-LLM's KV budget is tokens).
    for name, value in (sizing.knobs or {}).items():
        if value is not None:
            rec.set_server_knob(name, value)
    if sizing.flags:
        rec.server_args = sizing.flags
    rec.oom_margin_pct = stress.oom_margin_pct
    rec.oom_margin_source = "verification stress run"
    rec.oom_margin_sized_for_pct = sizing.expected_margin_pct
    rec.oom_margin_meaning = (
        "KV-pool headroom under the verification's stress run (every request at p99 lengths, max_num_seqs in the "
        f"batch), the load the pool was sized for ({_margin_text(sizing.expected_margin_pct)} free): it checks "
        "the sizing, not the traffic to come; `headroom` has the measured onsets and the length tail")
    rec.traffic_oom_margin_pct = traffic.oom_margin_pct
    for name, value in margin_advice(stress.oom_margin_pct, bool(stress.preemptions), knobs).items():
        setattr(rec, name, value)


def apply_headroom(rec: ProductionRecommendation, headroom: Headroom | None) -> None:
    """The headroom block of the recommendation; one measured for another point is left out, named."""
    if headroom is None:
        return
    based = rec.based_on
    if headroom.config is not None and (headroom.config != based.config or (headroom.level or based.level) != based.level):
        rec.headroom = Headroom(skipped=f"headroom.json is of {headroom.config} {headroom.level or ''}, the "
                                        f"recommendation is now {based.config} {based.level}: run the sweep again")
        return
    rec.headroom = headroom
