"""`servesweep compare A B`: is B better or worse than A, beyond the run-to-run noise?

Per matched level (or sweep point) and metric: the difference of the means over the repeats,
B - A, with its Welch t-interval (servesweep.confidence.welch_difference: the repeats of each
side are its independent units, their variances need not be equal), and a verdict:

  better / worse              the interval lies wholly on one side of 0
  no detectable difference    it straddles 0 (its width says how large a change could hide)
  no interval                 fewer than 2 repeats on a side: one window each says nothing
                              about noise, so no verdict is given

The error rate, stated with every comparison: two identical setups get "better" or "worse" on
a given metric in (1 - confidence) of comparisons (5 % at 95 %), half of them "worse". Over k
metrics the chance that at least one is flagged grows (up to k x 5 %); `--metrics` narrows k.

`--fail-on-regression PCT`: the comparison fails when a metric is "worse" and its mean moved the
worse way by at least PCT % of A's mean (significant and large enough to matter); when no metric
could be judged (no repeats) it is "not judged", which the CLI refuses to call a pass.
"""

from __future__ import annotations

from typing import Any, Sequence

from servesweep.confidence import welch_difference
from servesweep.reports.compare_inputs import Unit, match_units, read_side
from servesweep.results.comparison import Comparison, MetricDelta, PairComparison

# (key, name, higher is better); the key is the one in summary.json's ci95.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("output_tok_s", "output tok/s", True), ("goodput", "goodput req/s", True),
    ("ttft_ms.p50", "TTFT p50 ms", False), ("ttft_ms.p99", "TTFT p99 ms", False),
    ("tpot_ms.p50", "TPOT p50 ms", False), ("tpot_ms.p99", "TPOT p99 ms", False),
    ("itl_ms.p50", "ITL p50 ms", False), ("itl_ms.p99", "ITL p99 ms", False),
    ("e2e_ms.p50", "E2E p50 ms", False), ("e2e_ms.p99", "E2E p99 ms", False),
)
METRIC_KEYS = tuple(key for key, _, _ in METRICS)
DEFAULT_CONFIDENCE = 0.95
METHOD = ("difference of the means over the repeats (B - A) with its Welch t-interval; better/worse when the "
          "interval excludes 0")


def _pct(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / abs(base) * 100.0


def compare_metric(key: str, name: str, higher_is_better: bool, a: list[float], b: list[float],
                   confidence: float = DEFAULT_CONFIDENCE) -> MetricDelta:
    """One metric of one pair: the difference, its interval and the verdict (module docstring)."""
    base = dict(metric=key, name=name, higher_is_better=higher_is_better, a_values=a, b_values=b)
    if not a or not b:
        side = "A" if not a else "B"
        return MetricDelta(**base, verdict="not measured", why=f"not in {side}'s results")
    d = welch_difference(a, b, confidence)
    a_mean, b_mean = sum(a) / len(a), sum(b) / len(b)
    figures = dict(a_mean=a_mean, b_mean=b_mean, diff=d.diff, low=d.low, high=d.high, df=d.df,
                   change_pct=_pct(d.diff, a_mean), low_pct=_pct(d.low, a_mean), high_pct=_pct(d.high, a_mean))
    if d.low is None or d.high is None:
        ones = " and ".join(side for side, xs in (("A", a), ("B", b)) if len(xs) < 2)
        why = "one window each: no interval" if len(a) < 2 and len(b) < 2 else f"one window on {ones}: no interval"
        return MetricDelta(**base, **figures, verdict="no interval", why=f"{why} (run with --repeats 3 or more)")
    span = f"{pct(confidence)} interval {figures['low_pct']:+.1f} % to {figures['high_pct']:+.1f} %" \
        if a_mean else f"{pct(confidence)} interval {d.low:+.3g} to {d.high:+.3g}"
    if d.low > 0 or d.high < 0:
        up = d.low > 0
        verdict = "better" if up == higher_is_better else "worse"
        return MetricDelta(**base, **figures, verdict=verdict, why=span)
    return MetricDelta(**base, **figures, verdict="no detectable difference", why=span)


def compare_units(a: Unit, b: Unit, metrics: Sequence[str], confidence: float) -> PairComparison:
    # A metric neither side recorded per repeat (ITL before it joined the intervals) is left out.
    rows = [compare_metric(key, name, up, a.values.get(key) or [], b.values.get(key) or [], confidence)
            for key, name, up in METRICS if key in metrics and (a.values.get(key) or b.values.get(key))]
    return PairComparison(a=a.key, b=b.key, metrics=rows)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    def shown(d: dict[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "(not recorded)"

    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [f"{k} {shown(a, k)} vs {shown(b, k)}" for k in keys]


def context_warnings(pairs: list[tuple[Unit, Unit]]) -> list[str]:
    """What differs between the sides besides the thing compared: say it, once per kind."""
    words = {"workload": "workloads differ", "load": "loads differ", "server": "servers differ",
             "hardware": "hardware differs", "slo": "SLOs differ (goodput counts against them)"}
    out: list[str] = []
    for kind, phrase in words.items():
        seen: list[str] = []
        for a, b in pairs:
            for d in _differences(a.context.get(kind) or {}, b.context.get(kind) or {}):
                if d not in seen:
                    seen.append(d)
        if seen:
            out.append(f"{phrase}: " + "; ".join(seen[:6]) + ("; ..." if len(seen) > 6 else ""))
    for a, b in pairs:
        for side, unit in (("A", a), ("B", b)):
            if unit.suspect:
                out.append(f"{side} {unit.key}: its timing cross-check was suspect: latencies may be wrong")
    return out


def judge_regressions(pairs: list[PairComparison], pct: float) -> tuple[str, str]:
    """("pass" | "fail" | "not judged", one line): fail on a metric that is worse by >= pct %."""
    judged, failed = 0, []
    for pair in pairs:
        for m in pair.metrics:
            if m.verdict in ("better", "worse", "no detectable difference"):
                judged += 1
            if m.verdict == "worse" and m.change_pct is not None and abs(m.change_pct) >= pct:
                m.regression = True
                failed.append(f"{pair.b} {m.name} {m.change_pct:+.1f} % ({m.why})")
    if failed:
        return "fail", f"regression of at least {pct:g} %: " + "; ".join(failed)
    if not judged:
        return "not judged", "no metric has repeats on both sides: nothing could be judged (run with --repeats 3)"
    return "pass", f"no metric is worse by {pct:g} % or more beyond the noise ({judged} judged)"


def compare(a_spec: str, b_spec: str, metrics: Sequence[str] = METRIC_KEYS,
            confidence: float = DEFAULT_CONFIDENCE, fail_on_regression_pct: float | None = None) -> Comparison:
    """The comparison of two results folders (or points), as comparison.json holds it."""
    _, a_units = read_side(a_spec)
    _, b_units = read_side(b_spec)
    matched = match_units(a_units, b_units, a_spec, b_spec)
    pairs = [compare_units(a, b, metrics, confidence) for a, b in matched]
    result = Comparison(a=a_spec, b=b_spec, confidence=confidence, method=METHOD, pairs=pairs,
                        warnings=context_warnings(matched), fail_on_regression_pct=fail_on_regression_pct)
    if fail_on_regression_pct is not None:
        result.gate, result.gate_detail = judge_regressions(pairs, fail_on_regression_pct)
    return result


def error_rate_note(confidence: float, metrics: int) -> str:
    """The verdicts' stated error rate, printed with every comparison."""
    alpha = 1 - confidence
    return (f"verdicts at {pct(confidence)} per metric: two identical setups get 'better' or 'worse' on a given "
            f"metric in {pct(alpha)} of comparisons, on at least one of {metrics} metrics in up to "
            f"{pct(min(1.0, alpha * metrics))}")


def pct(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def simulated_flag_rate(cv: float, shift: float, repeats: int, trials: int = 2000, seed: int = 0,
                        confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Share of seeded simulated comparisons called better or worse: `repeats` windows a side with
    normal noise of relative sd `cv`, B's mean `shift` (a fraction) above A's. With shift 0 it is
    the verdicts' false-alarm rate; otherwise the chance to find that shift (the test's power)."""
    import random

    rng = random.Random(seed)
    flagged = 0
    for _ in range(trials):
        a = [rng.gauss(100.0, 100.0 * cv) for _ in range(repeats)]
        b = [rng.gauss(100.0 * (1 + shift), 100.0 * cv) for _ in range(repeats)]
        flagged += compare_metric("output_tok_s", "output tok/s", True, a, b, confidence).verdict in ("better", "worse")
    return flagged / trials
