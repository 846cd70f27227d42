"""The headroom of the recommended configuration in the report and the console: its lines and its
plot (`headroom.json` is folded into recommendation.json by servesweep.analysis.selection.apply_headroom). Each margin is named for what it is: the load onsets (measured on the verified server), the
length tail (predicted and measured), the device memory (NVML), and the KV-pool margin the
verification's stress run measured, which confirms the sizing it was aimed at.
"""

from __future__ import annotations

from typing import Any

from servesweep.results.headroom import Headroom, LengthOnset, Onset
from servesweep.results.recommendation import ProductionRecommendation
from servesweep.thresholds import KV_FULL_FRAC

ONSET_NAMES = {"preemption": "first preemption", "kv_full": "KV use >= 95 %", "slo": "SLO breached",
               "failure": "first failed request"}
ONSET_COLOURS = {"preemption": "#c33", "kv_full": "#e80", "slo": "#36c", "failure": "#000"}


def onset_text(onset: Onset) -> str:
    name = ONSET_NAMES.get(onset.kind, onset.kind)
    if onset.status == "reached":
        bracket = (f" (between {onset.interval[0]:.3g} and {onset.interval[1]:.3g})" if onset.interval
                   else " (already at the first step: no headroom above the recommended load)")
        return (f"{name}: at {onset.offered_rate:.3g} req/s offered, {onset.pct_above_recommended:+.0f} % vs the "
                f"recommended load{bracket}")
    if onset.status == "not_reached":
        return f"{name}: not reached up to {onset.up_to_rate:.3g} req/s ({onset.up_to_pct:+.0f} %)"
    return f"{name}: not measured ({onset.basis})"


def length_onset_text(onset: LengthOnset) -> str:
    name = ONSET_NAMES.get(onset.kind, onset.kind)
    if onset.status == "reached":
        bracket = f" (between {onset.interval[0]:g}x and {onset.interval[1]:g}x)" if onset.interval else ""
        return f"{name}: with requests {onset.length_factor:g}x as long at the recommended load{bracket}"
    if onset.status == "not_reached":
        return f"{name}: not reached with requests up to {onset.up_to_factor:g}x as long"
    return f"{name}: not measured ({onset.basis})"


def _ended(reason: str | None) -> str:
    return f"stopped at {reason}" if reason else "not finished (cut before its last step)"


def _length_lines(h: Headroom) -> list[str]:
    if not h.length_steps:
        return [f"Longer requests: {h.length_stop_reason}."] if h.length_stop_reason else []
    runs = ", ".join(f"x{s.length_factor:g}" for s in h.length_steps)
    lines = [f"Longer requests at the recommended load ({h.recommended_rate:.3g} req/s), both length distributions "
             f"scaled by {runs}, {h.window_s:g} s each; {_ended(h.length_stop_reason)}:"]
    lines += ["longer requests, " + length_onset_text(o) for o in h.length_onsets]
    t = h.tail
    if t is not None and t.length_factor_at_target is not None:
        lines.append(f"The length tail's projection for comparison: {t.length_factor_at_target:.2f}x brings this pool to "
                     f"{t.target_preemptions_per_10k:g} preemption per 10k requests (a rate, where the step above is "
                     f"the first preemption in one window).")
    return lines


def _tail_lines(h: Headroom) -> list[str]:
    t = h.tail
    if t is None:
        return []
    if t.status != "measured":
        return [f"Length tail: not measured ({t.reason})."]
    if t.measured_preemptions:
        measured = f"{t.measured_preemptions_per_10k:.3g} per 10k ({t.measured_preemptions} in {t.measured_requests:,})"
    else:
        measured = (f"0 in {t.measured_requests:,} requests (below {t.measured_upper_95_per_10k:.3g} per 10k, 95 %)"
                    if t.measured_upper_95_per_10k else "not measured")
    per_req = ""
    if t.predicted_kv_tokens_per_request and t.measured_kv_tokens_per_request:
        per_req = (f"; KV tokens per running request predicted {t.predicted_kv_tokens_per_request:,.0f}, measured "
                   f"{t.measured_kv_tokens_per_request:,.0f}")
    lines = [f"Length tail at the recommended load (pool {t.pool_blocks:,} blocks): preemptions per 10k requests "
             f"predicted {t.predicted_preemptions_per_10k:.3g}, measured {measured} over `{t.measured_from}`{per_req}. "
             f"Model: {t.model}."]
    if t.length_factor_at_target is not None:
        lines.append(f"Length headroom: requests {t.length_factor_at_target:.2f}x as long (both length distributions "
                     f"scaled) bring this pool's predicted rate past {t.target_preemptions_per_10k:g} per 10k (projected).")
    else:
        lines.append(f"Length headroom: not within 8x longer requests (or the context caps them first) at "
                     f"{t.target_preemptions_per_10k:g} per 10k (projected).")
    for s in t.sizings:
        cost = f", {s.kv_bytes / 2**20:,.1f} MiB" if s.kv_bytes else ""
        lines.append(f"KV sizing, {s.name}: {s.kv_blocks:,} blocks ({s.kv_tokens:,} tokens{cost}), predicted "
                     f"{s.predicted_preemptions_per_10k:.3g} preemptions per 10k requests (projected).")
    return lines


def headroom_lines(rec: ProductionRecommendation | None) -> list[str]:
    """The report's headroom section, one line per fact."""
    h = rec.headroom if rec is not None else None
    if h is None:
        return ["Headroom: not measured (it follows a passing verification; `servesweep headroom DIR` measures it "
                "for a sweep without it)."]
    if h.skipped:
        return [f"Headroom: not measured ({h.skipped})."]
    lines = [f"Recommended load: {h.recommended_rate:.3g} req/s ({h.recommended_basis}); offered {h.arrival} arrivals "
             f"at {', '.join(f'x{f:g}' for f in h.factors[:len(h.steps)])} of it, {h.window_s:g} s each; "
             f"{_ended(h.stop_reason)}." if h.recommended_rate else "Headroom: no recommended rate measured."]
    if not h.finished:
        lines.insert(0, "Headroom NOT FINISHED: the run was cut before its last step (`servesweep headroom DIR` "
                        "resumes it); the onsets below are those of the steps measured so far.")
    lines += [onset_text(o) for o in h.onsets]
    lines += _length_lines(h)
    bound = h.tail.batch_cap_bound_frac if h.tail is not None else None
    if bound is not None and bound < KV_FULL_FRAC:
        lines.append(f"No offered load can preempt with these lengths: max_num_seqs x the longest request holds at "
                     f"most {100 * bound:.0f} % of the pool (the batch cap binds before the pool); longer requests can "
                     "(the length search above, the length headroom below).")
    lines += _tail_lines(h)
    d = h.device_memory
    if d is not None:
        lines.append(f"Device memory (physical, NVML): {d.margin_pct:.1f} % free at peak "
                     f"({d.peak_bytes / 2**30:.1f} of {d.total_bytes / 2**30:.1f} GiB)." if d.status == "measured"
                     else f"Device memory (physical): not measured ({d.reason}).")
    if rec is not None and rec.oom_margin_pct is not None:
        sized = (f", sized for {rec.oom_margin_sized_for_pct:.1f} %" if rec.oom_margin_sized_for_pct is not None else "")
        lines.append(f"KV-pool margin under the stress run (oom_margin_pct): {rec.oom_margin_pct:.1f} %{sized}; it "
                     "confirms the sizing arithmetic, the onsets and the tail above say how the traffic to come meets it.")
    return lines


def console_line(rec: ProductionRecommendation | None) -> str | None:
    """One line for the sweep's banner: where each onset came, or why there is none."""
    h = rec.headroom if rec is not None else None
    if h is None or h.skipped or not h.onsets:
        return None
    longer = [f"longer requests, {length_onset_text(o)}" for o in h.length_onsets if o.kind == "preemption"]
    return "headroom: " + "; ".join([*(onset_text(o) for o in h.onsets), *longer])


def headroom_figure(h: Headroom, plt: Any) -> Any:
    """Offered load vs p99 TTFT, KV peak and preemptions, with the recommended load and each onset."""
    steps = h.steps
    x = [s.offered_rate for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, [s.ttft_ms if s.ttft_ms is not None else float("nan") for s in steps], marker="o", color="#36c",
            label=f"TTFT p{steps[0].percentile if steps else 99} (ms)")
    ax.set_xlabel("offered load (req/s, open loop)")
    ax.set_ylabel("TTFT (ms)")
    right = ax.twinx()
    right.plot(x, [100 * (s.kv_peak_frac or 0.0) for s in steps], marker="s", color="#e80", label="KV peak (%)")
    right.bar(x, [s.preemptions or 0 for s in steps], width=(max(x) - min(x) or 1) / 30, color="#c33", alpha=0.6,
              label="preemptions")
    right.set_ylabel("KV peak (%) / preemptions")
    if h.recommended_rate:
        ax.axvline(h.recommended_rate, color="green", linestyle="--", label="recommended load")
    for o in h.onsets:
        if o.status == "reached" and o.offered_rate is not None:
            ax.axvline(o.offered_rate, color=ONSET_COLOURS.get(o.kind, "grey"), linestyle=":",
                       label=f"onset: {ONSET_NAMES.get(o.kind, o.kind)}")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title("Headroom: offered load vs TTFT, KV use and preemptions")
    return fig
