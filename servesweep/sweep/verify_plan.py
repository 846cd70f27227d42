"""Verify a recommendation before shipping it: a plan of two runs, and the judgement of their results.

Pure: nothing here runs a level; the sweep runs the plan and passes the observations back.

The plan (`plan_verification`)
  traffic  the scenario's own workload at the recommended concurrency, closed loop, for a window
           `window_factor` (default 3) times the sweep level's (num_requests or duration_s;
           the same warm-up). It checks that the point holds for longer than it was measured.
  stress   every prompt and every output fixed at the 99th percentile of the scenario's length
           distributions (`length_quantile`, exact for each LengthSpec kind; outputs forced to
           that length with ignore_eos), arriving open loop with gamma gaps of burstiness 0.5
           (burstier than Poisson) at the mean request rate measured at the recommended load,
           over the same window, with at most `in_flight_factor` (2) x the recommended
           concurrency in flight: arrivals past the cap wait in the client, so a burst cannot
           grow without bound, and the server still sees up to twice the batch it was sized for
           (the excess waits in its queue, under max_num_seqs). Each p99-length request holds
           more KV cache than an average one, so the same rate means more memory in use: this
           is the run that finds a thin margin. A dataset workload has no LengthSpec to take
           quantiles of; the caller measures the dataset's p99 lengths and passes them.

The judgement (`judge`)
  traffic  zero failed requests, zero preemptions, OOM margin >= the band's lower edge (5 %),
           and the SLO percentiles within their limits;
  stress   zero failed requests, zero preemptions, and OOM margin within the band (5-40 %).
  The SLOs are judged on the traffic run only: the stress run is a deliberately abnormal load
  (every request at p99 length, bursts), and its latency says nothing about the latency users
  get; what must hold under it is memory: no preemption, no failure, margin left. The band's
  upper edge ("memory reserved that the load never touches") is judged on the stress run,
  which is the load that memory is reserved for; judging it on the traffic run would fail every
  sizing that leaves room for p99 requests. A margin that was not measured (no KV telemetry)
  fails: a recommendation is not verified on figures nobody saw.

`Verification` (servesweep.results.verification: verification.json, and `verification` in
recommendation.json) holds the attempts, each with
its sizing (sweep/sizing.py), the two runs' figures and the reasons, and the command line the
caller supplies.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel

from servesweep.errors import ConfigError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.lengths import LengthSpec
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workload import Workload
from servesweep.results.verification import Attempt, Check, Verification
from servesweep.thresholds import MARGIN_BAND
from servesweep.sweep.observation import Observation, slo_breaches, slo_uncertain, suspect_notes

STRESS_QUANTILE = 0.99
STRESS_BURSTINESS = 0.5
IN_FLIGHT_FACTOR = 2
WINDOW_FACTOR = 3.0


def length_quantile(spec: LengthSpec, q: float = STRESS_QUANTILE) -> int:
    """The q-quantile of the lengths `spec.sample` draws (the smallest x with P(X <= x) >= q).

    Exact: sampling rounds to the nearest integer and clips to [1, max_value], both
    non-decreasing maps, so the quantile of the drawn lengths is the rounded, clipped quantile
    of the underlying distribution. Uniform draws integers in [LOW, HIGH] with equal weight.
    """
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    if spec.kind == "fixed":
        return int(spec.a)
    if spec.kind == "uniform":
        low, high = int(spec.a), int(spec.b)
        return low + math.ceil(round(q * (high - low + 1), 9)) - 1
    z = NormalDist().inv_cdf(q)
    value = spec.a + z * spec.b if spec.kind == "normal" else spec.a * math.exp(z * spec.b)
    return int(min(max(round(value), 1), spec.max_value))


class RunPlan(BaseModel):
    """One verification run: the load level and the workload to run it with."""

    kind: str  # "traffic" or "stress"
    level: LoadLevel
    workload: Workload
    purpose: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level.model_dump(exclude_none=True),
                "workload": self.workload.describe(), "purpose": self.purpose}


class VerificationPlan(BaseModel):
    traffic: RunPlan
    stress: RunPlan
    concurrency: int
    request_rate: float
    input_len_p99: int
    output_len_p99: int

    def to_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic.to_dict(), "stress": self.stress.to_dict(), "concurrency": self.concurrency,
                "request_rate": self.request_rate, "input_len_p99": self.input_len_p99,
                "output_len_p99": self.output_len_p99}


def _window(sweep_level: LoadLevel, factor: float) -> dict[str, Any]:
    if sweep_level.num_requests is not None:
        return {"num_requests": max(1, math.ceil(sweep_level.num_requests * factor))}
    assert sweep_level.duration_s is not None  # LoadLevel guarantees one of the two
    return {"duration_s": sweep_level.duration_s * factor}


def plan_verification(workload: Workload, concurrency: int, request_rate: float, sweep_level: LoadLevel, *,
                      window_factor: float = WINDOW_FACTOR, in_flight_factor: int = IN_FLIGHT_FACTOR,
                      burstiness: float = STRESS_BURSTINESS, quantile: float = STRESS_QUANTILE,
                      max_model_len: int | None = None,
                      dataset_lengths: tuple[int, int] | None = None) -> VerificationPlan:
    """The traffic and stress runs for a recommendation (module docstring).

    request_rate: requests/s measured at the recommended load (the traffic rung's request
    throughput). sweep_level: the level the recommendation was measured at; its window and
    warm-up are scaled. dataset_lengths: (input p99, output p99) in tokens, required when the
    workload reads a dataset. max_model_len: when given, a stress request must fit in it.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not request_rate > 0 or math.isinf(request_rate):
        raise ValueError(f"the measured request rate must be a positive finite number, got {request_rate}")
    if window_factor <= 0 or in_flight_factor < 1:
        raise ValueError("window_factor must be > 0 and in_flight_factor >= 1")
    if dataset_lengths is not None:
        in_p99, out_p99 = dataset_lengths
    elif workload.dataset is not None:
        raise ConfigError(f"verification: workload dataset {workload.dataset} has no length distribution; "
                          "the stress run needs its p99 prompt and output lengths measured first")
    else:
        in_p99, out_p99 = length_quantile(workload.input_len, quantile), length_quantile(workload.output_len, quantile)
    if max_model_len is not None and in_p99 + out_p99 > max_model_len:
        raise ConfigError(f"verification: a p{quantile * 100:g} request ({in_p99} prompt + {out_p99} output tokens) "
                          f"does not fit max_model_len {max_model_len}")
    window = _window(sweep_level, window_factor)
    common = dict(window, warmup_requests=sweep_level.warmup_requests)
    traffic = RunPlan(
        kind="traffic", workload=workload,
        level=LoadLevel(concurrency=concurrency, name=f"verify-c{concurrency}", **common),
        purpose=f"the scenario's workload at the recommended concurrency, {window_factor:g}x the sweep's window",
    )
    stress_workload = workload.model_copy(update={
        "input_len": LengthSpec(kind="fixed", a=in_p99), "output_len": LengthSpec(kind="fixed", a=out_p99),
        "dataset": None, "ignore_eos": True,
    })
    stress = RunPlan(
        kind="stress", workload=stress_workload,
        level=LoadLevel(request_rate=request_rate, arrival="gamma", burstiness=burstiness,
                        max_concurrency=in_flight_factor * concurrency, name=f"stress-r{request_rate:.4g}",
                        **common),
        purpose=(f"p{quantile * 100:g} lengths ({in_p99} in, {out_p99} out), gamma arrivals (burstiness "
                 f"{burstiness:g}) at the measured {request_rate:.4g} req/s, at most {in_flight_factor * concurrency} "
                 "in flight"),
    )
    return VerificationPlan(traffic=traffic, stress=stress, concurrency=concurrency, request_rate=request_rate,
                            input_len_p99=in_p99, output_len_p99=out_p99)


class Judgement(BaseModel):
    passed: bool
    reasons: list[str]  # one line per failed check; empty when passed
    checks: list[Check]


def _memory_checks(run: str, obs: Observation, band: tuple[float, float], upper: bool) -> list[Check]:
    low, high = band
    checks = [Check(run=run, check="failures", ok=obs.failed == 0, detail=f"{obs.failed} failed request(s)")]
    if obs.preemptions is None:
        checks.append(Check(run=run, check="preemptions", ok=False, detail="preemptions not measured"))
    else:
        checks.append(Check(run=run, check="preemptions", ok=obs.preemptions == 0,
                            detail=f"{obs.preemptions} preemption(s)"))
    margin = obs.oom_margin_pct
    if margin is None:
        checks.append(Check(run=run, check="margin", ok=False, detail="OOM margin not measured (no KV telemetry)"))
    else:
        ok = margin >= low and (not upper or margin <= high)
        want = f"{low:g}-{high:g} %" if upper else f">= {low:g} %"
        checks.append(Check(run=run, check="margin", ok=ok, detail=f"OOM margin {margin:.1f} % (want {want})"))
    return checks


def judge(traffic: Observation, stress: Observation, slo: SLO | None,
          band: tuple[float, float] = MARGIN_BAND) -> Judgement:
    """Pass/fail of one verification attempt (see the module docstring for what is judged where)."""
    checks = _memory_checks("traffic", traffic, band, upper=False)
    breaches = slo_breaches(traffic, slo)
    if slo is not None and not slo.is_empty():
        # With repeats the verdict is on the means; one whose interval straddles its limit is
        # named (it could go either way), without failing a mean that is within the limit.
        checks.append(Check(run="traffic", check="slo", ok=not breaches,
                            detail="; ".join([*(breaches or [f"SLO p{traffic.percentile} met"
                                                             + (f" (mean of {traffic.n} repeats)" if traffic.n > 1 else "")]),
                                              *slo_uncertain(traffic, slo), *suspect_notes(traffic, slo)])))
    checks += _memory_checks("stress", stress, band, upper=True)
    reasons = [f"{c.run}: {c.detail}" for c in checks if not c.ok]
    return Judgement(passed=not reasons, reasons=reasons, checks=checks)


def add_attempt(verification: Verification, sizing: dict[str, Any], traffic: Observation, stress: Observation,
                judgement: Judgement) -> None:
    """Record an attempt in the verification (servesweep.results.verification); it passes when its
    latest attempt did."""
    verification.add(Attempt(sizing=sizing, traffic=traffic.to_dict(), stress=stress.to_dict(),
                             passed=judgement.passed, reasons=judgement.reasons, checks=judgement.checks))
