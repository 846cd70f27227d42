"""What one load level measured, reduced to the figures the adaptive sweep decides on.

An `Observation` is driver-agnostic: the load ladder (sweep/ladder.py), the rate search and the
verification judge (sweep/verify_plan.py) take it, whoever ran the level. `Observation.from_point`
builds one from a sweep point as `SweepRunner._run_level` records it (summary + telemetry),
`Observation.from_summary` from a load test's summary.json (the verification's and headroom's runs).

Fields:
  output_tok_s       output tokens per second over the measurement window
  request_rate       requests completed per second (the measured request throughput)
  request_goodput    requests per second that met every SLO; the request throughput without SLOs
  ttft_ms, tpot_ms,  the latency at `percentile` (the scenario's SLO percentile, default p99);
  e2e_ms             None when no request completed
  failed             requests that ended in an error (a server that died counts as at least one)
  preemptions        preemptions during the window; None when the server reported no metrics
  kv_peak_frac       peak KV-cache usage as a fraction of the pool (0-1); None without metrics
  running_batch_mean, running_batch_peak, waiting_peak
                     the server's evidence for open-loop levels (vLLM num_requests_running mean
                     and peak, num_requests_waiting peak); recorded, not judged; the verification's
                     step back reads the running peak of a preempting run (sweep/sizing.py)
  timing_suspect     the reasons the level's timing cross-check gave (servesweep.crosscheck); an
                     SLO verdict on such a level is taken, and says so (`suspect_notes`)
  n, ci95, samples   a level run with repeats (servesweep.confidence): the figures above are the
                     means over the n repeats, ci95 the 95 % t-interval (low, high) of each of
                     output_tok_s, request_goodput, ttft_ms, tpot_ms, e2e_ms (at `percentile`) and
                     samples their per-repeat values; n = 1, None, None for one window. An SLO
                     verdict whose interval straddles the limit is "uncertain" (`slo_verdicts`).

OOM margin follows backends/telemetry.py: (1 - kv_peak_frac) x 100, and 0 once the server
preempted, whatever the gauge says afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from servesweep.confidence import limit_verdict
from servesweep.loadgen.stats import SLO
from servesweep.results.points import SweepPoint
from servesweep.results.summary import Summary, TimingCheck, WindowTelemetry

SLO_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")
# Observation field -> the key of its figure in a summary's ci95 (`{p}`: the SLO percentile).
CI_KEYS = {"output_tok_s": "output_tok_s", "request_goodput": "goodput", "ttft_ms": "ttft_ms.p{p}",
           "tpot_ms": "tpot_ms.p{p}", "e2e_ms": "e2e_ms.p{p}"}


@dataclass(slots=True, frozen=True)
class Observation:
    output_tok_s: float
    request_goodput: float | None = None
    request_rate: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    percentile: int = 99
    failed: int = 0
    preemptions: int | None = None
    kv_peak_frac: float | None = None
    running_batch_mean: float | None = None
    waiting_peak: float | None = None
    running_batch_peak: float | None = None
    timing_suspect: tuple[str, ...] = ()
    n: int = 1
    ci95: dict[str, tuple[float, float]] | None = None
    samples: dict[str, tuple[float, ...]] | None = None

    @property
    def oom_margin_pct(self) -> float | None:
        if self.preemptions:
            return 0.0
        if self.kv_peak_frac is None:
            return None
        return (1.0 - self.kv_peak_frac) * 100.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["oom_margin_pct"] = self.oom_margin_pct
        return data

    @classmethod
    def from_point(cls, point: SweepPoint, percentile: int = 99) -> "Observation":
        """From one `points.jsonl` entry (its throughputs the headline: with repeats, the means); a
        failed point (server died or did not start) counts as failures."""
        return cls._observed(point.figures, point.status, point.server_telemetry, point.timing_check,
                             percentile, headline=True)

    @classmethod
    def from_summary(cls, summary: Summary, status: str = "ok", percentile: int = 99) -> "Observation":
        """From one load test's summary.json (a verification or headroom run): its own figures,
        its telemetry and its first level's timing check."""
        check = summary.levels[0].timing_check if summary.levels else None
        return cls._observed(summary, status, summary.telemetry or WindowTelemetry(), check, percentile,
                             headline=False)

    @classmethod
    def _observed(cls, s: Summary, status: str, t: WindowTelemetry, check: TimingCheck | None,
                  percentile: int, headline: bool) -> "Observation":
        failed = int(s.failed or 0)
        if status == "failed":
            failed = max(failed, 1)
        tput = s.headline_output_token_throughput if headline else s.output_token_throughput
        rate = s.headline_request_throughput if headline else s.request_throughput
        goodput = s.headline_request_goodput if headline else s.request_goodput
        repeated = _repeated_figures(s, percentile)
        q = f"p{percentile}"
        obs = cls(
            output_tok_s=float(tput or 0.0),
            request_goodput=goodput if goodput is not None else rate,
            request_rate=rate,
            ttft_ms=s.quantile("ttft_ms", q), tpot_ms=s.quantile("tpot_ms", q), e2e_ms=s.quantile("e2e_ms", q),
            percentile=percentile,
            failed=failed,
            preemptions=int(t.preemptions) if t.preemptions is not None else None,
            kv_peak_frac=t.kv_cache_peak_frac,
            running_batch_mean=t.running_batch_mean,
            waiting_peak=t.waiting_peak,
            running_batch_peak=t.running_batch_peak,
            timing_suspect=tuple((check.reasons if check is not None else None) or ()),
        )
        return obs if repeated is None else replace(obs, **repeated)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Observation":
        """Back from `to_dict` (a verification attempt stored on disk); unknown keys are dropped."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "timing_suspect" in values:
            values["timing_suspect"] = tuple(values["timing_suspect"] or ())
        if values.get("ci95"):
            values["ci95"] = {k: tuple(v) for k, v in values["ci95"].items()}
        if values.get("samples"):
            values["samples"] = {k: tuple(v) for k, v in values["samples"].items()}
        return cls(**values)

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The 95 % interval of a field (None for one window, or where the repeats gave none)."""
        return (self.ci95 or {}).get(metric)


def _repeated_figures(summary: Summary, percentile: int) -> dict[str, Any] | None:
    """The means, intervals and per-repeat values of a level run with repeats (summary ci95), as
    Observation fields; None for a level of one window."""
    ci = summary.ci95 or {}
    if len(ci) != 1:
        return None
    figures = next(iter(ci.values()))
    out: dict[str, Any] = {"ci95": {}, "samples": {}}
    n = 1
    for field_name, key in CI_KEYS.items():
        got = figures.get(key.format(p=percentile))
        if got is None or got.mean is None:
            continue
        out[field_name] = got.mean
        n = max(n, int(got.n or 1))
        out["samples"][field_name] = tuple(got.values or ())
        if got.low is not None:
            out["ci95"][field_name] = (got.low, got.high)
    out["n"] = n
    return out


def slo_uncertain(obs: Observation, slo: SLO | None) -> list[str]:
    """One line per limited metric whose 95 % interval straddles its limit: the verdict (taken on
    the mean by `slo_breaches`) could go either way; empty without repeats."""
    if slo is None or not obs.ci95:
        return []
    out = []
    for metric in SLO_METRICS:
        limit, ci = getattr(slo, metric), obs.interval(metric)
        if limit is None or ci is None:
            continue
        if limit_verdict(ci[0], ci[1], limit) == "uncertain":
            out.append(f"{metric} p{obs.percentile} uncertain: 95 % CI {ci[0]:.1f}-{ci[1]:.1f} straddles {limit:g} "
                       f"(n={obs.n})")
    return out


def slo_breaches(obs: Observation, slo: SLO | None) -> list[str]:
    """One line per limited metric whose percentile is over its limit (or was not measured).

    The same rule as analysis/selection.py's `meets_slo`, less the failed-request clause, which
    callers check on its own.
    """
    if slo is None:
        return []
    out = []
    for metric in SLO_METRICS:
        limit = getattr(slo, metric)
        if limit is None:
            continue
        value = getattr(obs, metric)
        if value is None:
            out.append(f"{metric} p{obs.percentile} not measured (limit {limit:g})")
        elif value > limit:
            out.append(f"{metric} p{obs.percentile} {value:.1f} > {limit:g}")
    return out


def suspect_notes(obs: Observation, slo: SLO | None) -> list[str]:
    """A line saying an SLO verdict rests on a level whose timing the cross-check doubts; empty
    when there is no SLO or nothing to doubt."""
    if slo is None or slo.is_empty() or not obs.timing_suspect:
        return []
    return ["SLO verdict on a level whose timing is suspect: " + "; ".join(obs.timing_suspect)]
