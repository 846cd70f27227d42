"""What one load level measured, reduced to the figures the adaptive sweep decides on.

An `Observation` is driver-agnostic: the load ladder (sweep/ladder.py), the rate search and the
verification judge (sweep/verify_plan.py) take it, whoever ran the level. `Observation.from_point`
builds one from a sweep point as `SweepRunner._run_level` records it (summary + telemetry).

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
    def from_point(cls, point: dict[str, Any], percentile: int = 99) -> "Observation":
        """From one `points.jsonl` entry; a failed point (server died or did not start) counts as failures."""
        s = point.get("summary") or {}
        t = point.get("telemetry") or {}
        failed = int(s.get("failed") or 0)
        if point.get("status") == "failed":
            failed = max(failed, 1)
        goodput = (s.get("goodput") or {}).get("request_goodput")
        preemptions = t.get("preemptions")
        repeated = _repeated_figures(s, percentile)
        obs = cls(
            output_tok_s=float(s.get("output_token_throughput") or 0.0),
            request_goodput=goodput if goodput is not None else s.get("request_throughput"),
            request_rate=s.get("request_throughput"),
            ttft_ms=(s.get("ttft_ms") or {}).get(f"p{percentile}"),
            tpot_ms=(s.get("tpot_ms") or {}).get(f"p{percentile}"),
            e2e_ms=(s.get("e2e_ms") or {}).get(f"p{percentile}"),
            percentile=percentile,
            failed=failed,
            preemptions=int(preemptions) if preemptions is not None else None,
            kv_peak_frac=t.get("kv_cache_peak_frac"),
            running_batch_mean=t.get("running_batch_mean"),
            waiting_peak=t.get("waiting_peak"),
            running_batch_peak=t.get("running_batch_peak"),
            timing_suspect=tuple((point.get("timing_check") or {}).get("reasons") or ()),
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


def _repeated_figures(summary: dict[str, Any], percentile: int) -> dict[str, Any] | None:
    """The means, intervals and per-repeat values of a level run with repeats (summary ci95), as
    Observation fields; None for a level of one window."""
    ci = summary.get("ci95") or {}
    if len(ci) != 1:
        return None
    figures = next(iter(ci.values()))
    out: dict[str, Any] = {"ci95": {}, "samples": {}}
    n = 1
    for field_name, key in CI_KEYS.items():
        got = figures.get(key.format(p=percentile))
        if not got or got.get("mean") is None:
            continue
        out[field_name] = got["mean"]
        n = max(n, int(got.get("n") or 1))
        out["samples"][field_name] = tuple(got.get("values") or ())
        if got.get("low") is not None:
            out["ci95"][field_name] = (got["low"], got["high"])
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
