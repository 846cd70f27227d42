"""Adaptive load: find the knee and the SLO edge instead of sweeping a fixed list of levels.

Both searches are driver-agnostic objects. The sweep asks for the next level, runs it as a
normal load level, and feeds the result back as an `Observation` (sweep/observation.py):

    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=64), slo=scenario.slo)
    while (c := ladder.next_level()) is not None:
        point = run_level(LoadLevel(concurrency=c, ...))
        ladder.record(c, Observation.from_point(point, percentile))
    ladder.recommended_concurrency, ladder.stop_reason, ladder.to_dict()

`next_level()` returns the same value until it is recorded, and None once the search is over.

ConcurrencyLadder (closed loop, `concurrency: auto`)
  Doubling: rungs 1, 2, 4, ... (the last one clipped to the ceiling), until the first of these
  holds at the newest rung, in this order of precedence:
    failures    a request failed (or the server died)                     -> stop at once
    preemption  the server preempted a request                              -> stop at once
    kv_full     peak KV-cache usage >= kv_full_frac (95 %: the OOM-margin band's lower edge)
                                                                            -> stop at once
    slo         the scenario's SLO percentile of a limited metric is over its limit
    knee        the knee is reached: analysis/knee.py's `find_knee` on every rung so far, i.e.
                the first sampled concurrency after which one more slot adds less than
                KNEE_THRESHOLD (10 %) of the output throughput one slot gives at concurrency 1
    ceiling     the rung ran at max_concurrency without any of the above
  The first three stop the search at once, without bisection: the configuration itself is at
  its memory or error limit there, and a bisected edge would measure a KV pool that the sizing
  step (sweep/sizing.py) is about to change; the recommendation stays at the clean rungs below.
  A hard limit met while bisecting ends the search the same way and becomes the stop reason.

  Bisection: after a knee or slo stop, up to `bisect_steps` rungs per target, at integer
  midpoints, never repeating a concurrency:
    bisect knee  between the knee (as find_knee places it on all rungs) and the next sampled
                 rung above it, until they are adjacent integers
    bisect slo   between the highest rung that met the SLOs and the lowest that broke them
  The two brackets usually coincide (the last two doubling rungs), so each bisection rung
  informs both; the knee is bisected first.

  Result: `recommended_concurrency` = the highest clean rung (no limit broken) that is at or
  below the knee and below every rung that broke a limit; None if concurrency 1 broke one.
  For the knee to match the report's, which uses batch = min(concurrency, max_num_seqs), give a
  ceiling no larger than the server's max_num_seqs: past it, concurrency only queues requests.

RateSearch (open loop)
  The highest request rate that passes: no failed request, the SLO percentiles within their
  limits, and request goodput >= min_goodput_frac x the offered rate (catches saturation when
  there are no SLOs: an overloaded server completes fewer requests per second than arrive).
  Goodput is counted over the window from the first send to the last end, so a short level
  reads a little low even when the server keeps up; 0.9 allows for that, and longer levels
  (duration_s) make the check sharper. Rungs: start_rate, doubled until a rate fails or the
  ceiling max_rate passes; if start_rate itself fails, halved (at most max_halvings times)
  until one passes; then bisected between the highest passing and the lowest failing rate
  until hi / lo - 1 <= rel_tol (at most bisect_steps rungs). Rates are rounded to 4 significant
  digits. Preemptions and KV usage are recorded per rung as the server's evidence (with the
  running batch mean and the waiting-queue peak), not judged: in open loop they show up as
  latency, which the SLOs judge; the verification run (sweep/verify_plan.py) judges them.
  Stop reasons: the first limit broken by the rung that ended doubling (failures, slo,
  goodput), or ceiling.

Repeats (issue 25; `load.repeats` >= 2, servesweep.confidence): every rung is run `repeats` times
and observed as the means with 95 % t-intervals over the repeats. The searches then use them:
  uncertain SLO  a limited metric whose interval straddles its limit (`slo_uncertain`): the
                 runner asks `wants_repeat` and runs the rung once more (fresh prompts) until the
                 verdict is clear or the rung has `max_repeats` repeats; a verdict still
                 uncertain at the cap is taken on the mean and named in the rung's `uncertain`
                 and in the result's `uncertainty`.
  noise-aware knee
                 a rung whose gain over the rung below is inside the noise is first run again
                 (`wants_repeat`, up to `max_repeats`), then: a rung's throughput gain over the last rung that made a real gain counts only
                 when the 95 % Welch interval of the difference lies above 0; otherwise the rung
                 is taken as flat (its throughput replaced by that anchor's) before `find_knee`,
                 so a gain smaller than the noise is not a gain and a dip inside the noise does
                 not make a non-monotone curve. A significant drop stays a drop.
  Without repeats (n = 1) none of this applies and the searches behave as before.

Stop-reason strings are the constants below; `to_dict()` gives the JSON, `to_model()` the results
file `configs/<config>/search.json` (servesweep.results.ladder_search.LadderSearch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servesweep.confidence import welch_gain
from servesweep.loadgen.stats import SLO
from servesweep.analysis.knee import find_knee
from servesweep.results.ladder_search import LadderSearch, build_ladder_search
from servesweep.scenarios.search import LadderConfig, RateSearchConfig
from servesweep.sweep.observation import Observation, slo_breaches, slo_uncertain, suspect_notes

# Stop reasons (stable: they are written to results files).
STOP_KNEE = "knee"
STOP_SLO = "slo"
STOP_PREEMPTION = "preemption"
STOP_KV_FULL = "kv_full"
STOP_FAILURES = "failures"
STOP_CEILING = "ceiling"
STOP_GOODPUT = "goodput"  # rate search only: goodput below min_goodput_frac x the offered rate
HARD_STOPS = (STOP_FAILURES, STOP_PREEMPTION, STOP_KV_FULL)

# Why a rung was run.
REASON_DOUBLE = "double"
REASON_HALVE = "halve"
REASON_BISECT_KNEE = "bisect knee"
REASON_BISECT_SLO = "bisect slo"
REASON_BISECT = "bisect"

@dataclass(slots=True)
class Rung:
    """One level the search ran: where, why, what it measured and which limits it broke."""

    level: float  # concurrency (int) for the ladder, request rate for the rate search
    reason: str
    observation: Observation
    limits: list[str] = field(default_factory=list)  # stop-reason constants, in order of precedence
    detail: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)  # SLO verdicts whose interval straddles the limit

    @property
    def clean(self) -> bool:
        return not self.limits

    def to_dict(self, key: str) -> dict[str, Any]:
        return {key: self.level, "reason": self.reason, "limits": list(self.limits), "detail": list(self.detail),
                "uncertain": list(self.uncertain), "observation": self.observation.to_dict()}


class _Search:
    """Bookkeeping shared by both searches: the pending level, the rungs, the end."""

    slo: SLO | None

    def __init__(self, max_repeats: int = 1) -> None:
        self.max_repeats = max_repeats  # the cap on a rung's repeats while its SLO verdict is uncertain
        self.rungs: list[Rung] = []
        self.stop_reason: str | None = None
        self._pending: tuple[float, str] | None = None
        self._finished = False

    @property
    def done(self) -> bool:
        return self._finished

    @property
    def pending_reason(self) -> str | None:
        """Why the level `next_level()` returned is to be run (double, bisect knee, ...)."""
        return self._pending[1] if self._pending is not None else None

    def next_level(self) -> Any:
        if self._pending is not None:
            return self._pending[0]
        if self._finished:
            return None
        planned = self._plan()
        if planned is None:
            self._finished = True
            return None
        self._pending = planned
        return planned[0]

    def _take_pending(self, level: float) -> str:
        if self._pending is None or self._pending[0] != level:
            want = None if self._pending is None else self._pending[0]
            raise ValueError(f"recorded level {level!r}, but the search asked for {want!r}")
        reason = self._pending[1]
        self._pending = None
        return reason

    def _plan(self) -> tuple[float, str] | None:
        raise NotImplementedError

    def wants_repeat(self, obs: Observation) -> list[str]:
        """Why the pending rung should be run once more before it is recorded: its SLO verdicts
        that the interval leaves open, while it has fewer than `max_repeats` repeats; else []."""
        if obs.n >= self.max_repeats or obs.failed:
            return []
        return slo_uncertain(obs, self.slo)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_model(self) -> LadderSearch:
        """The results file's model (`configs/<config>/search.json`)."""
        return build_ladder_search(self.to_dict())

    def uncertainty(self) -> dict[str, Any]:
        """The verdicts left open at the repeat cap, and the repeats behind the rungs."""
        open_ = {str(r.level): list(r.uncertain) for r in self.rungs if r.uncertain}
        ns = [r.observation.n for r in self.rungs]
        return {"repeats": {"min": min(ns) if ns else None, "max": max(ns) if ns else None,
                            "cap": self.max_repeats},
                "uncertain_rungs": open_,
                "note": (("SLO verdicts still uncertain at the repeat cap (taken on the mean): "
                          + "; ".join(f"{lv}: {', '.join(v)}" for lv, v in open_.items())) if open_ else
                         "no verdict left uncertain" if ns and max(ns) > 1 else
                         "one window per rung: no interval, the verdicts carry the run-to-run noise unmeasured")}


class ConcurrencyLadder(_Search):
    """Closed-loop search for the knee and the SLO edge (see the module docstring)."""

    def __init__(self, config: LadderConfig | None = None, slo: SLO | None = None, max_repeats: int = 1) -> None:
        super().__init__(max_repeats)
        self.config = config or LadderConfig()
        self.slo = slo
        self._steps = {REASON_BISECT_KNEE: 0, REASON_BISECT_SLO: 0}

    def next_level(self) -> int | None:
        level = super().next_level()
        return None if level is None else int(level)

    def wants_repeat(self, obs: Observation) -> list[str]:
        """As for every search (an uncertain SLO verdict), and also a throughput gain over the rung
        below that is inside the noise: the knee would take the rung as flat, so it gets more
        repeats (up to the cap) before it decides where the knee is."""
        why = super().wants_repeat(obs)
        if obs.n >= self.max_repeats or obs.failed or self._pending is None:
            return why
        gain = gain_in_noise(self.rungs, self._pending[0], obs)
        return why + ([gain] if gain else [])

    def limits(self, obs: Observation) -> tuple[list[str], list[str]]:
        """The limits an observation breaks (precedence order) and a line of detail for each."""
        limits, detail = [], []
        if obs.failed > 0:
            limits.append(STOP_FAILURES)
            detail.append(f"{obs.failed} failed request(s)")
        if obs.preemptions:
            limits.append(STOP_PREEMPTION)
            detail.append(f"{obs.preemptions} preemption(s)")
        if obs.kv_peak_frac is not None and obs.kv_peak_frac >= self.config.kv_full_frac:
            limits.append(STOP_KV_FULL)
            detail.append(f"KV cache peak {obs.kv_peak_frac:.1%} >= {self.config.kv_full_frac:.0%}")
        breaches = slo_breaches(obs, self.slo)
        if breaches:
            limits.append(STOP_SLO)
            detail.extend(breaches)
        detail.extend(suspect_notes(obs, self.slo))
        return limits, detail

    def record(self, concurrency: int, obs: Observation) -> None:
        reason = self._take_pending(concurrency)
        limits, detail = self.limits(obs)
        uncertain = slo_uncertain(obs, self.slo)
        self.rungs.append(Rung(int(concurrency), reason, obs, limits, detail + uncertain, uncertain))
        hard = next((lim for lim in limits if lim in HARD_STOPS), None)
        if hard is not None:
            # Also while bisecting: the configuration's memory or error limit outranks the knee.
            self.stop_reason, self._finished = hard, True
            return
        if self.stop_reason is not None:
            return  # bisecting
        if STOP_SLO in limits:
            self.stop_reason = STOP_SLO
        elif self.knee()["knee_reached"]:
            self.stop_reason = STOP_KNEE
        elif concurrency >= self.config.max_concurrency:
            self.stop_reason = STOP_CEILING

    def knee(self) -> dict[str, Any]:
        """analysis/knee.py's knee over every rung so far (concurrency as the batch size), on the
        noise-aware throughputs when the rungs have repeats (see the module docstring)."""
        levels, tputs, flat = noise_aware_throughputs(self.rungs)
        knee = find_knee(levels, tputs, threshold=self.config.knee_threshold)
        if flat:
            knee["noise_aware"] = {"output_tok_s": tputs, "flat_within_noise": flat,
                                   "rule": "a gain counts when its 95 % Welch interval lies above 0"}
        return knee

    def slo_edge(self) -> tuple[int | None, int | None]:
        """(highest concurrency that met the SLOs below the lowest that broke them, that lowest)."""
        broken = [int(r.level) for r in self.rungs if STOP_SLO in r.limits]
        hi = min(broken) if broken else None
        met = [int(r.level) for r in self.rungs if STOP_SLO not in r.limits and (hi is None or r.level < hi)]
        return (max(met) if met else None), hi

    @property
    def recommended_concurrency(self) -> int | None:
        if not self.rungs:
            return None
        knee = self.knee()["knee_batch_size"]
        bad = [r.level for r in self.rungs if not r.clean]
        lowest_bad = min(bad) if bad else None
        ok = [int(r.level) for r in self.rungs
              if r.clean and r.level <= knee and (lowest_bad is None or r.level < lowest_bad)]
        return max(ok) if ok else None

    def recommendation_uncertainty(self) -> dict[str, Any]:
        """`uncertainty()` plus the recommended rung's intervals, in words."""
        out = self.uncertainty()
        rec = self.recommended_concurrency
        rung = next((r for r in self.rungs if rec is not None and r.level == rec), None)
        if rung is not None and rung.observation.ci95:
            obs = rung.observation
            out["recommended_ci95"] = {k: list(v) for k, v in obs.ci95.items()}
            ci = obs.interval("output_tok_s")
            if ci is not None:
                out["note"] = (f"c{rec}: {obs.output_tok_s:,.0f} output tok/s (95 % CI {ci[0]:,.0f}-{ci[1]:,.0f}, "
                               f"n={obs.n}); " + out["note"])
        return out

    def _plan(self) -> tuple[int, str] | None:
        if not self.rungs:
            return 1, REASON_DOUBLE
        if self.stop_reason is None:
            last = int(self.rungs[-1].level)
            return min(2 * last, self.config.max_concurrency), REASON_DOUBLE
        if self.stop_reason == STOP_CEILING:
            return None
        sampled = sorted(int(r.level) for r in self.rungs)
        knee = self.knee()
        if knee["knee_reached"] and self._steps[REASON_BISECT_KNEE] < self.config.bisect_steps:
            lo = int(knee["knee_batch_size"])
            hi = next((c for c in sampled if c > lo), None)
            planned = self._midpoint(lo, hi, sampled, REASON_BISECT_KNEE)
            if planned is not None:
                return planned
        if self._steps[REASON_BISECT_SLO] < self.config.bisect_steps:
            lo, hi = self.slo_edge()
            planned = self._midpoint(lo, hi, sampled, REASON_BISECT_SLO)
            if planned is not None:
                return planned
        return None

    def _midpoint(self, lo: int | None, hi: int | None, sampled: list[int], reason: str) -> tuple[int, str] | None:
        if lo is None or hi is None or hi - lo <= 1:
            return None
        mid = (lo + hi) // 2
        if mid in sampled:  # cannot happen with adjacent brackets; guards "no repeats" anyway
            return None
        self._steps[reason] += 1
        return mid, reason

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.slo_edge()
        return {
            "kind": "concurrency",
            "config": self.config.model_dump(),
            "slo": self.slo.model_dump(exclude_none=True) if self.slo is not None else None,
            "stop_reason": self.stop_reason,
            "done": self.done,
            "recommended_concurrency": self.recommended_concurrency,
            "knee": self.knee() if self.rungs else None,
            "slo_edge": {"highest_met": lo, "lowest_broken": hi},
            "uncertainty": self.recommendation_uncertainty(),
            "rungs": [r.to_dict("concurrency") for r in self.rungs],
        }


class RateSearch(_Search):
    """Open-loop search for the highest request rate that passes (see the module docstring)."""

    def __init__(self, config: RateSearchConfig | None = None, slo: SLO | None = None, max_repeats: int = 1) -> None:
        super().__init__(max_repeats)
        self.config = config or RateSearchConfig()
        self.slo = slo
        self._bisect_steps = 0
        self._halvings = 0

    def next_level(self) -> float | None:
        return super().next_level()

    def limits(self, rate: float, obs: Observation) -> tuple[list[str], list[str]]:
        limits, detail = [], []
        if obs.failed > 0:
            limits.append(STOP_FAILURES)
            detail.append(f"{obs.failed} failed request(s)")
        breaches = slo_breaches(obs, self.slo)
        if breaches:
            limits.append(STOP_SLO)
            detail.extend(breaches)
        detail.extend(suspect_notes(obs, self.slo))
        frac = self.config.min_goodput_frac
        if frac is not None and (obs.request_goodput is None or obs.request_goodput < frac * rate):
            limits.append(STOP_GOODPUT)
            got = "not measured" if obs.request_goodput is None else f"{obs.request_goodput:.3g}/s"
            detail.append(f"goodput {got} < {frac:g} x offered {rate:g}/s")
        return limits, detail

    def record(self, rate: float, obs: Observation) -> None:
        reason = self._take_pending(rate)
        limits, detail = self.limits(rate, obs)
        uncertain = slo_uncertain(obs, self.slo)
        self.rungs.append(Rung(float(rate), reason, obs, limits, detail + uncertain, uncertain))
        if self.stop_reason is None:
            if limits:
                self.stop_reason = limits[0]
            elif rate >= self.config.max_rate:
                self.stop_reason = STOP_CEILING

    def bracket(self) -> tuple[float | None, float | None]:
        """(highest passing rate below the lowest failing one, that lowest failing rate)."""
        failing = [r.level for r in self.rungs if not r.clean]
        hi = min(failing) if failing else None
        passing = [r.level for r in self.rungs if r.clean and (hi is None or r.level < hi)]
        return (max(passing) if passing else None), hi

    @property
    def best_rate(self) -> float | None:
        return self.bracket()[0]

    def _plan(self) -> tuple[float, str] | None:
        if not self.rungs:
            return self.config.start_rate, REASON_DOUBLE
        if self.stop_reason is None:
            return min(2 * self.rungs[-1].level, self.config.max_rate), REASON_DOUBLE
        if self.stop_reason == STOP_CEILING:
            return None
        lo, hi = self.bracket()
        assert hi is not None  # a stop other than the ceiling means a rate failed
        if lo is None:
            if self._halvings >= self.config.max_halvings:
                return None
            self._halvings += 1
            return _round_rate(hi / 2), REASON_HALVE
        if hi <= lo * (1 + self.config.rel_tol) or self._bisect_steps >= self.config.bisect_steps:
            return None
        mid = _round_rate((lo + hi) / 2)
        if not lo < mid < hi or any(r.level == mid for r in self.rungs):
            mid = (lo + hi) / 2
        self._bisect_steps += 1
        return mid, REASON_BISECT

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.bracket()
        return {
            "kind": "request_rate",
            "config": self.config.model_dump(),
            "slo": self.slo.model_dump(exclude_none=True) if self.slo is not None else None,
            "stop_reason": self.stop_reason,
            "done": self.done,
            "best_rate": lo,
            "lowest_failing_rate": hi,
            "uncertainty": self.uncertainty(),
            "rungs": [r.to_dict("request_rate") for r in self.rungs],
        }


def _gain_interval(anchor: Rung | None, obs: Observation) -> tuple[float, float] | None:
    """The 95 % Welch interval of obs's output tok/s minus the anchor's; None without two repeats
    on both sides."""
    mine = (obs.samples or {}).get("output_tok_s") or ()
    theirs = ((anchor.observation.samples or {}).get("output_tok_s") or ()) if anchor else ()
    if len(mine) < 2 or len(theirs) < 2:
        return None
    diff, low = welch_gain(list(theirs), list(mine))
    return None if low is None else (low, 2 * diff - low)  # the interval is symmetric about diff


def _noise_aware(rungs: list[Rung]) -> tuple[list[float], list[float], list[float], Rung | None]:
    """noise_aware_throughputs, plus the last anchor."""
    levels: list[float] = []
    tputs: list[float] = []
    flat: list[float] = []
    anchor: Rung | None = None
    for r in sorted(rungs, key=lambda r: r.level):
        gain = _gain_interval(anchor, r.observation)
        levels.append(float(r.level))
        if anchor is not None and gain is not None and gain[0] <= 0 <= gain[1]:
            tputs.append(tputs[levels.index(float(anchor.level))])
            flat.append(float(r.level))
            continue
        tputs.append(float(r.observation.output_tok_s))
        anchor = r
    return levels, tputs, flat, anchor


def noise_aware_throughputs(rungs: list[Rung]) -> tuple[list[float], list[float], list[float]]:
    """(levels, output tok/s, the levels taken as flat) in level order: a rung whose gain over the
    anchor (the last rung with a real gain) is not above 0 at 95 % (Welch) gets the anchor's
    throughput. Rungs without two repeats on both sides keep their own mean."""
    levels, tputs, flat, _ = _noise_aware(rungs)
    return levels, tputs, flat


def gain_in_noise(rungs: list[Rung], level: float, obs: Observation) -> str | None:
    """A line when obs (to be recorded at `level`) gains over the anchor below it by less than the
    noise, i.e. the knee would take it as flat; None otherwise."""
    anchor = _noise_aware([r for r in rungs if r.level < level])[3]
    gain = _gain_interval(anchor, obs)
    if anchor is None or gain is None or not gain[0] <= 0 <= gain[1]:
        return None
    return (f"output tok/s gain over {anchor.level:g} inside the noise: 95 % CI {gain[0]:+,.0f} to {gain[1]:+,.0f} "
            f"(n={obs.n})")


def _round_rate(rate: float) -> float:
    return float(f"{rate:.4g}")
