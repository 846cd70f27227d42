"""How far the verified configuration is from breaking: the load search's plan, its steps' figures
and the onsets found in them. Pure: nothing here runs a level (sweep/headroom_run.py does).

The load search (after the verification's runs, on the same server)
  The offered load steps up from the recommended one: `factors` (scenario `headroom:`, default
  1, 1.25, 1.5, 2, 2.5, 3)
  x the request rate measured at the recommended load, open loop with the scenario's arrival
  process (Poisson unless it names one) and the scenario's own length distributions, one bounded
  window (`window_s`) per step with no in-flight cap (a cap would queue requests in the client,
  where the server's TTFT cannot see them). It stops when every onset has been seen, at the first
  failed request, or after the last factor.

The onsets, each the first step that shows it:
  preemption  the server's preemption counter rose during the window
  kv_full     peak KV-cache use >= 95 % of the pool (KV_FULL_FRAC)
  slo         a limited latency over its limit at the scenario's percentile
  failure     a request failed (or the server died)
Each is reported as the offered load and as % above the recommended load, with the bracket it
lies in (the last step without it, the first with it); one that did not happen is "not reached
up to" the highest load offered; one whose figure no step measured (no metrics) is "not measured".
A step at factor 1 is open loop at the closed loop's measured rate: its arrivals are burstier, so
an onset at factor 1 says the recommended load itself is at that edge.

The length search (after the load search, on the same server)
  At the recommended rate, every request's lengths (both distributions, servesweep.sweep.kv_tail.
  scaled) x `length_factors` (default 1.25, 1.5, 2, 3, 4), one window each, until the first
  preemption, or the first failure, or the last factor. Its onsets (preemption, kv_full, failure)
  are length factors, with their bracket; with a p99-sized pool and max_num_seqs capping what is in
  flight, this is the search that can reach the pool: more load alone queues in front of the cap.
"""

from __future__ import annotations

from typing import Any, Callable

from servesweep.loadgen.stats import SLO
from servesweep.results.headroom import DeviceMemory, HeadroomStep, LengthOnset, Onset
from servesweep.results.summary import WindowTelemetry
from servesweep.sweep.observation import Observation, slo_breaches
from servesweep.thresholds import KV_FULL_FRAC

STEP_SLACK_S = 15.0  # the drain after a window and the server's catch-up, on top of the window

ONSETS: dict[str, tuple[str, Callable[[HeadroomStep], bool], Callable[[HeadroomStep], bool]]] = {
    # kind: (what it means, seen in a step, measured in a step)
    "preemption": ("the server's preemption counter rose", lambda s: bool(s.preemptions),
                   lambda s: s.preemptions is not None),
    "kv_full": (f"KV-cache use reached {KV_FULL_FRAC:.0%} of the pool",
                lambda s: s.kv_peak_frac is not None and s.kv_peak_frac >= KV_FULL_FRAC,
                lambda s: s.kv_peak_frac is not None),
    "slo": ("a latency SLO was breached at the scenario's percentile", lambda s: bool(s.slo_breaches),
            lambda s: s.ttft_ms is not None or s.tpot_ms is not None or s.e2e_ms is not None),
    "failure": ("a request failed", lambda s: s.failed > 0, lambda s: True),
}


def step_seconds(window_s: float, factor: float) -> float:
    """What one step may take: its window, the backlog an overload leaves to drain (at most the
    excess over the recommended rate, i.e. (factor - 1) x the window), and slack."""
    return window_s * max(factor, 1.0) + STEP_SLACK_S


def headroom_step(obs: Observation, factor: float, offered_rate: float, slo: SLO | None,
                  telemetry: WindowTelemetry | None, completed: int, run_dir: str | None,
                  length_factor: float = 1.0) -> HeadroomStep:
    """One step's record from what its window measured."""
    t = telemetry or WindowTelemetry()
    return HeadroomStep(
        factor=factor, length_factor=length_factor, offered_rate=offered_rate, achieved_rate=obs.request_rate, completed=completed,
        failed=obs.failed, ttft_ms=obs.ttft_ms, tpot_ms=obs.tpot_ms, e2e_ms=obs.e2e_ms, percentile=obs.percentile,
        kv_peak_frac=obs.kv_peak_frac, preemptions=obs.preemptions, running_batch_peak=obs.running_batch_peak,
        waiting_peak=obs.waiting_peak, slo_breaches=slo_breaches(obs, slo) if slo and not slo.is_empty() else [],
        device_mem_peak_bytes=t.device_mem_peak_bytes, device_mem_total_bytes=t.device_mem_total_bytes,
        dir=run_dir)


def _pct(rate: float, recommended: float) -> float:
    return (rate / recommended - 1.0) * 100.0


def find_onsets(steps: list[HeadroomStep], recommended_rate: float, slo: SLO | None) -> list[Onset]:
    """Each onset's first step, bracket and % above the recommended load (module docstring)."""
    out = []
    top = max((s.offered_rate for s in steps), default=None)
    for kind, (meaning, seen, measured) in ONSETS.items():
        if kind == "slo" and (slo is None or slo.is_empty()):
            out.append(Onset(kind=kind, status="not_measured", basis="the scenario sets no SLO"))
            continue
        if not any(measured(s) for s in steps):
            out.append(Onset(kind=kind, status="not_measured",
                             basis=f"no step measured it ({'no server metrics' if kind != 'slo' else 'no request completed'})"))
            continue
        first = next((i for i, s in enumerate(steps) if seen(s)), None)
        if first is None:
            out.append(Onset(kind=kind, status="not_reached", up_to_rate=top, up_to_pct=_pct(top, recommended_rate),
                             basis=f"not seen in {len(steps)} step(s) up to {top:.4g} req/s offered"))
            continue
        step = steps[first]
        low = steps[first - 1].offered_rate if first > 0 else None
        detail = "; ".join(step.slo_breaches) if kind == "slo" else meaning
        out.append(Onset(kind=kind, status="reached", offered_rate=step.offered_rate,
                         pct_above_recommended=_pct(step.offered_rate, recommended_rate),
                         interval=[low, step.offered_rate] if low is not None else None,
                         basis=f"{detail} at {step.offered_rate:.4g} req/s offered (x{step.factor:g})"
                               + (f", not at {low:.4g}" if low is not None else ", the first step")))
    return out


def stop_reason(steps: list[HeadroomStep], factors: list[float]) -> str | None:
    """Why the search ends after these steps; None while it goes on."""
    if steps and steps[-1].failed:
        return "the first failed request"
    if steps and all(any(seen(s) for s in steps) for _, seen, _ in ONSETS.values()):
        return "every onset seen"
    if len(steps) >= len(factors):
        return f"the cap: {factors[-1]:g}x the recommended load"
    return None


def device_memory(steps: list[HeadroomStep], gpu_note: str | None = None) -> DeviceMemory:
    """The physical margin over the steps (NVML's device memory, not the KV pool)."""
    peaks = [s.device_mem_peak_bytes for s in steps if s.device_mem_peak_bytes]
    total = next((s.device_mem_total_bytes for s in steps if s.device_mem_total_bytes), None)
    if not peaks or not total:
        return DeviceMemory(status="not_measured", reason=gpu_note or "no NVML device memory readings (no GPU)")
    peak = max(peaks)
    return DeviceMemory(status="measured", peak_bytes=peak, total_bytes=total, margin_pct=(1.0 - peak / total) * 100.0,
                        basis=f"NVML peak device memory over {len(peaks)} headroom step(s) vs the device total; "
                              "vLLM preallocates its KV pool, so this is flat under load and says how much "
                              "more the process could take before a CUDA OOM, not how full the pool is")


LENGTH_ONSETS = ("preemption", "kv_full", "failure")


def length_stop_reason(steps: list[HeadroomStep], factors: list[float]) -> str | None:
    """Why the length search ends after these steps; None while it goes on."""
    if steps and steps[-1].failed:
        return "the first failed request"
    if any(ONSETS["preemption"][1](s) for s in steps):
        return "the first preemption"
    if len(steps) >= len(factors):
        return f"the cap: requests {factors[-1]:g}x as long" if factors else "no length factors"
    return None


def find_length_onsets(steps: list[HeadroomStep]) -> list[LengthOnset]:
    """Each length onset's first step and bracket (the module docstring's length search)."""
    out = []
    for kind in LENGTH_ONSETS:
        meaning, seen, measured = ONSETS[kind]
        if not any(measured(s) for s in steps):
            out.append(LengthOnset(kind=kind, status="not_measured",
                                   basis="no step measured it (no server metrics)" if steps else "no length step ran"))
            continue
        first = next((i for i, s in enumerate(steps) if seen(s)), None)
        if first is None:
            top = steps[-1].length_factor
            out.append(LengthOnset(kind=kind, status="not_reached", up_to_factor=top,
                                   basis=f"not seen in {len(steps)} step(s) up to requests {top:g}x as long"))
            continue
        step = steps[first]
        below = steps[first - 1].length_factor if first else 1.0
        out.append(LengthOnset(kind=kind, status="reached", length_factor=step.length_factor,
                               interval=[below, step.length_factor],
                               basis=f"{meaning} with requests {step.length_factor:g}x as long at the recommended "
                                     f"load ({step.offered_rate:.3g} req/s), not at {below:g}x"))
    return out
