"""Repeats and their 95 % confidence intervals (issue 25).

A level run with `repeats: N` (`--repeats N`) is run N times back to back, each repeat a level of
its own (labelled `<level>#r<i>`) with prompts drawn afresh from the run's seeded generator, so a
repeat never resends the previous repeat's prompts (reproducible from --seed).

Method: a Student-t interval over the repeats' per-repeat values ("t-interval over repeats"):
    mean +- t(0.975, n - 1) x s / sqrt(n)
for each metric of `CI_METRICS` (output tok/s, goodput, TTFT/TPOT/ITL/e2e percentiles). The repeats
are the independent units: requests within one window share the server's state (batch, queue,
KV cache, a neighbour's noise on a shared machine), so a bootstrap over requests would treat
correlated samples as independent and give intervals too narrow; a busy machine's run-to-run
drift only shows between windows. With fewer than 2 repeats there is no interval (low/high None).

`summary.json` carries, per level label (the base label, without `#r<i>`):
    ci95: {"c4": {"output_tok_s": {"mean", "low", "high", "n", "values", "method"}, ...}}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from servesweep.results.summary import Interval

METHOD = "student-t over repeats"
REPEAT_SEP = "#r"
_REPEAT_RE = re.compile(r"^(?P<base>.+)#r(?P<i>\d+)$")

# (key in ci95, where in a level summary). Percentile keys are filled per percentile present.
CI_METRICS = ("output_tok_s", "goodput", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
PERCENTILES = ("p50", "p90", "p95", "p99")


def t_quantile(df: float, confidence: float = 0.95) -> float:
    """The two-sided `confidence` quantile of Student's t with `df` degrees of freedom (a Welch
    df need not be whole)."""
    from scipy.stats import t  # imported here: scipy takes a moment to load and most commands never need it

    return float(t.ppf(0.5 + confidence / 2, df))


def repeat_label(label: str, i: int) -> str:
    return f"{label}{REPEAT_SEP}{i}"


def base_label(label: str) -> str:
    m = _REPEAT_RE.match(label)
    return m.group("base") if m else label


def expand_repeats(levels: list[Any], repeats: int) -> list[Any]:
    """Each level `repeats` times in a row, named `<label>#r1..N`; unchanged for one repeat."""
    if repeats <= 1:
        return list(levels)
    return [lv.model_copy(update={"name": repeat_label(lv.label, i)}) for lv in levels for i in range(1, repeats + 1)]


def interval(values: Iterable[float | None]) -> dict[str, Any]:
    """The mean and its 95 % t-interval over the values given (None values are left out)."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    out: dict[str, Any] = {"mean": None, "low": None, "high": None, "n": n, "values": xs, "method": METHOD}
    if n == 0:
        return out
    mean = sum(xs) / n
    out["mean"] = mean
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = t_quantile(n - 1) * sd / math.sqrt(n)
        out["low"], out["high"] = mean - half, mean + half
    return out


def level_values(entry: dict[str, Any]) -> dict[str, float | None]:
    """The per-repeat values of one level summary, keyed as in ci95 (`ttft_ms.p99`, ...)."""
    goodput = (entry.get("goodput") or {}).get("request_goodput")
    values: dict[str, float | None] = {
        "output_tok_s": entry.get("output_token_throughput"),
        "goodput": goodput if goodput is not None else entry.get("request_throughput"),
        "request_throughput": entry.get("request_throughput"),
    }
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        dist = entry.get(metric) or {}
        for p in PERCENTILES:
            if p in dist:
                values[f"{metric}.{p}"] = dist[p]
    return values


def ci_from_values(per_repeat: list[dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    keys = list(dict.fromkeys(k for vals in per_repeat for k in vals))
    return {k: interval(vals.get(k) for vals in per_repeat) for k in keys}


def repeats_ci(levels: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """ci95 per base level label over the level summaries of a run (the repeats grouped by label).
    A repeat the run's stop cut short (`cut_short`: interrupted, the server gone) is left out: its
    window is not the level's, and its values would widen or shift the interval."""
    groups: dict[str, list[dict[str, float | None]]] = {}
    for entry in levels:
        if not entry.get("cut_short"):
            groups.setdefault(base_label(entry["label"]), []).append(level_values(entry))
    return {label: ci_from_values(vals) for label, vals in groups.items()}


def merge_ci(ci: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One level's ci95 with more repeats' values added (an extra repeat of an uncertain rung)."""
    keys = list(dict.fromkeys([*ci, *extra]))
    return {k: interval([*(ci.get(k) or {}).get("values", []), *(extra.get(k) or {}).get("values", [])])
            for k in keys}


@dataclass(frozen=True, slots=True)
class Difference:
    """mean(b) - mean(a) and its Welch interval (low/high None with fewer than 2 values on a side)."""

    diff: float
    low: float | None
    high: float | None
    df: float | None


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """The difference of two groups' means with its Welch (unequal variances) t-interval at
    `confidence`: the repeats of two setups are independent windows with their own noise."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    diff = mb - ma
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, None, None, None)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(diff, diff, diff, None)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    half = t_quantile(df, confidence) * se
    return Difference(diff, diff - half, diff + half, df)


def welch_gain(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """(mean(b) - mean(a), the low end of its 95 % Welch interval); low None with < 2 values on a side."""
    d = welch_difference(a, b)
    return d.diff, d.low


def binomial_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion (an exact-match accuracy over `trials` tasks): unlike
    the normal approximation it stays inside [0, 1] and is not empty at 0 or `trials` successes."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def limit_verdict(low: float, high: float, limit: float) -> str:
    """An upper limit (an SLO) judged on a 95 % interval: "met" when the whole interval is within it,
    "missed" when the whole interval is over it, "uncertain" when the interval straddles it."""
    return "met" if high <= limit else "missed" if low > limit else "uncertain"


def fmt_ci(ci: dict[str, Any] | Interval | None, digits: str = ",.0f") -> str:
    """`mean ± half` (or the mean alone without an interval)."""
    if isinstance(ci, Interval):
        ci = ci.to_file()
    if not ci or ci.get("mean") is None:
        return "-"
    if ci.get("low") is None:
        return f"{ci['mean']:{digits}}"
    return f"{ci['mean']:{digits}} ± {(ci['high'] - ci['low']) / 2:{digits}}"


def precision_of(ci: dict[str, Any] | None) -> float | None:
    """The interval's half-width relative to the mean (None without an interval or with mean 0)."""
    if not ci or ci.get("low") is None or not ci.get("mean"):
        return None
    return (ci["high"] - ci["low"]) / 2 / abs(ci["mean"])


def more_repeats(target: float, cap: int, metric: str = "output_tok_s"):
    """A LoadRunner.more_levels callback for --target-precision: after a level's last planned
    repeat, one more repeat while the metric's 95 % interval is wider than `target` x the mean
    and the level has fewer than `cap` repeats."""

    def decide(result: Any, done: list[Any], upcoming: list[Any]) -> list[Any]:
        base = base_label(result.level.label)
        if any(base_label(lv.label) == base for lv in upcoming):
            return []
        mine = [r.summary for r in done if base_label(r.level.label) == base]
        if len(mine) >= cap:
            return []
        rel = precision_of(ci_from_values([level_values(s) for s in mine]).get(metric))
        if rel is not None and rel <= target:
            return []
        return [result.level.model_copy(update={"name": repeat_label(base, len(mine) + 1)})]

    return decide


def precision_report(ci95: dict[str, dict[str, Any]], target: float, cap: int,
                     metric: str = "output_tok_s") -> dict[str, Any]:
    """Per level: the precision reached and whether it met the target (or the cap stopped it)."""
    levels = {}
    for label, metrics in ci95.items():
        ci = metrics.get(metric) or {}
        rel = precision_of(ci)
        levels[label] = {"n": ci.get("n"), "relative_half_width": rel,
                         "reached": rel is not None and rel <= target}
    return {"target": target, "metric": metric, "max_repeats": cap, "levels": levels}


def parse_precision(text: str) -> float:
    """`5%` or `0.05` -> 0.05."""
    value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    if not 0 < value < 1:
        raise ValueError(f"a precision is a fraction of the mean in (0, 1), e.g. 5% or 0.05; got {text!r}")
    return value
