"""CI thresholds: `--assert` expressions checked against each load level's summary.

An expression is METRIC OP NUMBER, e.g. `ttft_ms.p99<500`, `goodput>=20`, `failed==0`,
`output_token_throughput>1000`, `e2e_ms.p50<=2000`; OP is one of < <= > >= == !=.

METRIC names a value of one level's summary (servesweep.loadgen.stats.summarize):
  counts and rates   completed, failed, cancelled, request_throughput, output_token_throughput,
                     total_token_throughput, total_prompt_tokens, total_output_tokens, duration_s,
                     output_len_mismatch, prompt_len_mismatch
  latency            DIST.STAT with DIST one of ttft_ms, tpot_ms, itl_ms, e2e_ms, client_send_delay_ms
                     and STAT one of mean, std, p50, p90, p95, p99, max, count
  goodput            requests/s meeting every SLO (the summary's goodput.request_goodput);
                     goodput.request_goodput, goodput.good_requests, goodput.fraction_good
Units are the summary's: milliseconds, requests or tokens per second, counts.

An expression that cannot be parsed, or names no such metric, is refused when parsed
(ConfigError listing the allowed names), before anything runs. When evaluated, a metric without a
value at a level (no TTFT because every request failed, no goodput because no SLO was given) FAILS
with the note "no value": a threshold that cannot be checked is not met.

Public API:
  parse_assertion(text) -> Assertion;  parse_assertions(texts) -> list[Assertion]
  evaluate(assertions, levels) -> list[AssertionResult]    levels: {name: summary} or [(name, summary)]
  all_passed(results) -> bool
  result_rows(results) -> (header, rows of strings)         for a rich or markdown table
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from servesweep.errors import ConfigError

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
SCALARS = (
    "completed", "failed", "cancelled", "request_throughput", "output_token_throughput",
    "total_token_throughput", "total_prompt_tokens", "total_output_tokens", "duration_s",
    "output_len_mismatch", "prompt_len_mismatch",
)
DISTRIBUTIONS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "client_send_delay_ms")
STATS = ("mean", "std", "p50", "p90", "p95", "p99", "max", "count")
GOODPUT_KEYS = ("request_goodput", "good_requests", "fraction_good")
GOODPUT_DEFAULT = "request_goodput"

_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
)


def allowed_metrics() -> list[str]:
    """Every metric name an expression may use."""
    return [*SCALARS, *(f"{d}.{s}" for d in DISTRIBUTIONS for s in STATS),
            "goodput", *(f"goodput.{k}" for k in GOODPUT_KEYS)]


def _allowed_text() -> str:
    return (f"{', '.join(SCALARS)}; {{{','.join(DISTRIBUTIONS)}}}.{{{','.join(STATS)}}}; "
            f"goodput, goodput.{{{','.join(GOODPUT_KEYS)}}}")


@dataclass(frozen=True, slots=True)
class Assertion:
    text: str  # as the user wrote it, whitespace removed
    metric: str  # canonical path, e.g. "goodput.request_goodput"
    op: str
    threshold: float

    def check(self, actual: float) -> bool:
        return OPS[self.op](actual, self.threshold)


def parse_assertion(text: str) -> Assertion:
    match = _EXPRESSION.match(text or "")
    if match is None:
        raise ConfigError(f"assertion {text!r} is not METRIC OP NUMBER (OP one of < <= > >= == !=), "
                          f"e.g. ttft_ms.p99<500")
    metric, op, number = match["metric"], match["op"], float(match["number"])
    if metric == "goodput":
        metric = f"goodput.{GOODPUT_DEFAULT}"
    if metric in DISTRIBUTIONS:
        raise ConfigError(f"assertion {text!r}: {metric} needs a statistic, e.g. {metric}.p99; "
                          f"one of {', '.join(STATS)}")
    if metric not in allowed_metrics():
        raise ConfigError(f"assertion {text!r}: unknown metric {match['metric']!r}; allowed: {_allowed_text()}")
    if not math.isfinite(number):
        raise ConfigError(f"assertion {text!r}: the threshold must be a finite number")
    return Assertion("".join(text.split()), metric, op, number)


def parse_assertions(texts: Iterable[str]) -> list[Assertion]:
    return [parse_assertion(t) for t in texts]


def resolve(summary: Mapping[str, Any], metric: str) -> float | None:
    """The metric's value in one level's summary, or None when it has none."""
    value: Any = summary
    for key in metric.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class AssertionResult:
    level: str
    expression: str
    actual: float | None
    passed: bool
    note: str = ""  # why it failed without a comparison, e.g. "no value"


def _why_no_value(summary: Mapping[str, Any], metric: str) -> str:
    if metric.startswith("goodput.") and "goodput" not in summary:
        return "no value (no SLO was given, so no goodput)"
    if metric.split(".")[0] in DISTRIBUTIONS and not summary.get("completed"):
        return "no value (no request completed)"
    return "no value"


def evaluate(assertions: Iterable[Assertion],
             levels: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]]
             ) -> list[AssertionResult]:
    """Every assertion at every level, level by level in the given order."""
    pairs = list(levels.items()) if isinstance(levels, Mapping) else list(levels)
    assertions = list(assertions)
    results = []
    for level, summary in pairs:
        for a in assertions:
            actual = resolve(summary, a.metric)
            if actual is None:
                results.append(AssertionResult(level, a.text, None, False, _why_no_value(summary, a.metric)))
            else:
                results.append(AssertionResult(level, a.text, actual, a.check(actual)))
    return results


def all_passed(results: Iterable[AssertionResult]) -> bool:
    """True when every result passed (and there was at least one)."""
    results = list(results)
    return bool(results) and all(r.passed for r in results)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def result_rows(results: Iterable[AssertionResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of plain strings: level, assertion, actual value, PASS or FAIL."""
    rows = []
    for r in results:
        actual = "-" if r.actual is None else _number(r.actual)
        verdict = "PASS" if r.passed else ("FAIL: " + r.note if r.note else "FAIL")
        rows.append([r.level, r.expression, actual, verdict])
    return ["level", "assertion", "actual", "result"], rows
