"""Which load the accuracy gate is measured under on one configuration (`under_load` in the gate spec).

  under_load: {concurrency: N}     closed loop at N, on every configuration
  under_load: true                 the configuration's recommended load:
    concurrency: auto              the ladder's recommended concurrency (sweep/ladder.py)
    request_rate: auto             the rate search's best rate
    fixed levels (or a search      the level with the best goodput (request throughput without
    that recommended nothing)      SLOs) among the configuration's ok points, those that meet the
                                   SLOs without failed requests first; output throughput breaks ties

`choose_gate_load` returns the level and a few words on why (shown in the report), or None and the
cause, which is recorded as the measurement's "not measured" reason.
"""

from __future__ import annotations

from typing import Any

from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.stats import SLO
from servesweep.quality.gate.spec import UnderLoad
from servesweep.results.points import SweepPoint
from servesweep.scenarios.schema import LoadSpec
from servesweep.sweep.ladder import ConcurrencyLadder, RateSearch
from servesweep.sweep.observation import Observation, slo_breaches


def best_point(points: list[SweepPoint], slo: SLO | None, percentile: int = 99) -> tuple[SweepPoint | None, bool]:
    """(the ok point with the best goodput, whether it met the SLOs without failures); points that
    did are preferred."""
    ok = [p for p in points if p.status == "ok" and p.figures.completed]
    if not ok:
        return None, False
    scored = []
    for p in ok:
        obs = Observation.from_point(p, percentile)
        clean = obs.failed == 0 and not slo_breaches(obs, slo)
        scored.append(((clean, obs.request_goodput or 0.0, obs.output_tok_s), p))
    key, point = max(scored, key=lambda s: s[0])
    return point, key[0]


def choose_gate_load(under_load: UnderLoad, load: LoadSpec, points: list[SweepPoint],
                     search: ConcurrencyLadder | RateSearch | None = None, slo: SLO | None = None,
                     percentile: int = 99) -> tuple[LoadLevel | None, str]:
    """The load level to measure the gate under on one configuration (`points`: its points only)."""
    if under_load.concurrency is not None:
        return load.level(concurrency=under_load.concurrency), "the gate spec's concurrency"
    if isinstance(search, ConcurrencyLadder) and search.recommended_concurrency is not None:
        return load.level(concurrency=search.recommended_concurrency), "the search's recommended concurrency"
    if isinstance(search, RateSearch) and search.best_rate is not None:
        return load.level(request_rate=search.best_rate), "the search's best rate"
    point, clean = best_point(points, slo, percentile)
    if point is None:
        return None, "no ok load level with completed requests on this configuration to take the load from"
    spec = point.load
    # The scenario's level at the point's concurrency or rate, as the sweep ran it.
    level = (load.level(concurrency=spec.concurrency) if spec.concurrency is not None
             else load.level(request_rate=spec.request_rate))
    what = "best goodput" if slo is not None and not slo.is_empty() else "best request throughput"
    note = "" if clean else "; no level met the SLOs without failed requests"
    return level, f"the level with the {what}{note}"
