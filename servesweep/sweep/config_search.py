"""The config search (`sweep: {search: auto}`): which configuration of the grid to start next,
from what the finished ones measured, and when to stop.

Driver-agnostic, like the load ladder: the sweep asks `next_config()`, runs that configuration
as it runs any (one server start, its ladder), and feeds back `record(label, measured)`:

    search = ConfigSearch(candidates, options, budget_bytes, ladder_max=32)
    while (pick := search.next_config()) is not None:
        label, why = pick
        search.record(label, measured_from_points(...))
    search.record_model(...)  -> search.json

Objective: a configuration's request goodput (requests per second that met every SLO) at its
best clean level: the highest over the levels its ladder ran without a failed request, a
preemption, a full KV cache or a broken SLO, i.e. the goodput at its SLO edge. The report's
recommendation ranks points by the same goodput, so the grid's best is the report's best.

Noise: a gap between two configurations counts when it exceeds the 95 % Welch half-width of
their goodputs (both run with load.repeats >= 2: sqrt(h1^2 + h2^2)); otherwise when it exceeds
`noise_floor` x the higher goodput.

Method: a coordinate search over the grid's axes that uses what is known about them.
  Axes      every configuration field the grid varies: `batch_cap` (max_num_seqs under the
            concurrency ladder), `ordinal` (numbers: max_num_batched_tokens, memory fraction;
            max_num_seqs otherwise), `categorical` (precision, KV-cache dtype, server kind).
  Budget    configurations whose memory estimate (sweep/config_budget.py) is over
            vram_budget_gib are skipped before anything starts.
  Start     the highest max_num_seqs that fits the budget, the middle value of every ordinal
            axis, the first value of every categorical one.
  Batch cap the ladder's ceiling is min(max_concurrency, max_num_seqs): a server with a lower
            cap runs the loads up to that cap the way a server with a higher cap runs them (the
            running batch never exceeds the concurrency). So once a configuration is measured,
            every configuration that differs only by a lower max_num_seqs is `dominated`: its
            goodput cannot exceed the measured one's beyond the noise. Upwards, a higher cap
            only matters when the measured ladder stopped at its cap (stop reason ceiling with
            the cap below the ladder's max_concurrency); a ladder that stopped at the knee, the
            SLO edge, the KV cache or failures below its cap would run the same rungs and stop
            the same way (`same_ladder`).
  Moves     the next start is an unmeasured neighbour of the best: one step along an ordinal
            axis, any other value of a categorical one, in axis order (lower value first). A
            measured neighbour becomes the best only when it beats the best beyond the noise;
            so the search walks uphill along each axis and never past a neighbour that did not
            improve (goodput is taken as rising and falling at most once along an ordinal axis
            within the rest of the configuration).
  Stop      `converged`: every neighbour of the best is measured or ruled out, so no
            unmeasured neighbour can beat it beyond the noise; `max_starts`; or nothing fits the
            budget / nothing is left. The configurations never started are listed with the rule
            that ruled them out (`not_reached`: no neighbour of the best when it stopped).
Deterministic: the same measurements give the same choices, so one run of it suffices, and a
resumed sweep replays its choices from the measurements on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from servesweep.results.config_search_record import (
    SKIP_BUDGET,
    SKIP_DOMINATED,
    SKIP_NOT_REACHED,
    SKIP_SAME_LADDER,
    STOP_CONVERGED,
    STOP_EXHAUSTED,
    STOP_MAX_STARTS,
    STOP_NOTHING_FITS,
    Axis,
    Best,
    ConfigSearchRecord,
    Measured,
    Skipped,
    Step,
)
from servesweep.loadgen.stats import SLO
from servesweep.results.ladder_search import LadderSearch
from servesweep.results.points import SweepPoint
from servesweep.scenarios.search import ConfigSearchConfig
from servesweep.sweep.observation import Observation, slo_breaches

# The server configuration fields a grid can vary, in the order the search tries their neighbours.
AXIS_FIELDS = ("max_batch_size", "max_num_tokens", "memory_fraction", "precision", "kv_cache_dtype", "kind")
STOP_CEILING = "ceiling"  # the load ladder's stop reason when it ran up to its ceiling

OBJECTIVE = ("request goodput (requests/s meeting every SLO) at the configuration's best clean level "
             "(no failed request, no preemption, KV cache below full, SLOs met)")
NOISE_RULE = ("a gap counts when it exceeds the 95 % Welch half-width of both goodputs (load.repeats >= 2), "
              "else noise_floor x the higher goodput")
GIB = 2**30


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration of the grid as the search sees it."""

    label: str
    coords: dict[str, Any]  # axis field -> value: every AXIS_FIELDS name, None where the configuration sets none
    est_bytes: int | None = None
    est_note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "coords", {name: self.coords[name] if name in self.coords else None
                                            for name in AXIS_FIELDS})


def measured_from_points(points: list[SweepPoint], slo: SLO | None, percentile: int = 99,
                         kv_full_frac: float = 1.0, ladder: LadderSearch | None = None) -> Measured:
    """The objective of one configuration from its sweep points (and its ladder's search.json)."""
    best: tuple[float, SweepPoint, Observation] | None = None
    for point in points:
        if point.status != "ok":
            continue
        obs = Observation.from_point(point, percentile)
        clean = (obs.failed == 0 and not obs.preemptions and not slo_breaches(obs, slo)
                 and (obs.kv_peak_frac is None or obs.kv_peak_frac < kv_full_frac))
        if clean and obs.request_goodput is not None and (best is None or obs.request_goodput > best[0]):
            best = (obs.request_goodput, point, obs)
    stop = ladder.stop_reason if ladder is not None else None
    ceiling = ladder.ceiling if ladder is not None else None
    failed = None
    if not any(p.status == "ok" for p in points):
        failed = next((str(p.cause) for p in points if p.cause), "no level measured")
    if best is None:
        return Measured(goodput=None, level=None, output_tok_s=None, ladder_stop=stop,
                        ladder_ceiling=ceiling, failed=failed)
    goodput, point, obs = best
    ci = obs.interval("request_goodput")
    return Measured(goodput=goodput, level=point.level, output_tok_s=obs.output_tok_s,
                    goodput_ci95_half=(ci[1] - ci[0]) / 2 if ci else None,
                    ladder_stop=stop, ladder_ceiling=ceiling)


def noise(a: Measured, b: Measured, floor: float) -> float:
    """The gap between a's and b's goodputs that is inside the noise (see the module docstring)."""
    if a.goodput_ci95_half is not None and b.goodput_ci95_half is not None:
        return math.hypot(a.goodput_ci95_half, b.goodput_ci95_half)
    return floor * max(a.goodput or 0.0, b.goodput or 0.0)


def beats(a: Measured, b: Measured, floor: float) -> bool:
    """a's goodput is above b's by more than the noise."""
    if a.goodput is None:
        return False
    if b.goodput is None:
        return True
    return a.goodput - b.goodput > noise(a, b, floor)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_goodput(m: Measured) -> str:
    """The objective in words, for the console and search.json."""
    if m.goodput is None:
        return f"no clean level ({m.failed})" if m.failed else "no clean level"
    return f"{m.goodput:.3g} req/s at {m.level}"


class ConfigSearch:
    """The search over one grid (see the module docstring)."""

    def __init__(self, candidates: list[Candidate], options: ConfigSearchConfig | None = None,
                 budget_bytes: float | None = None, ladder_max: int | None = None,
                 names: dict[str, str] | None = None) -> None:
        """`ladder_max`: the concurrency ladder's max_concurrency when the load is `concurrency: auto`
        (enables the batch-cap rules); None for fixed levels or the rate search. `names`: the
        server's own names of the fields (ServerConfig.knob_names: vLLM's max_num_seqs, ...), for
        the reasons it writes."""
        self.names = dict(names or {})
        self.candidates = {c.label: c for c in candidates}
        self.options = options or ConfigSearchConfig(method="auto")
        self.budget_bytes = budget_bytes
        self.ladder_max = ladder_max
        self.axes = self._axes(candidates)
        self._by_coords = {self._key(c.coords): c.label for c in candidates}
        self.measured: dict[str, Measured] = {}
        self.steps: list[Step] = []
        self.skipped: dict[str, Skipped] = {}
        # The configuration the moves go from: the last one that beat its predecessor beyond the
        # noise. `best` (the highest measured) may be another one, within the noise of it.
        self.anchor: str | None = None
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None
        self._pending: tuple[str, str] | None = None
        for c in candidates:
            if budget_bytes is not None and c.est_bytes is not None and c.est_bytes > budget_bytes:
                self._skip(c.label, SKIP_BUDGET, f"needs at least {c.est_bytes / GIB:.2f} GiB ({c.est_note}), over "
                                                  f"the {budget_bytes / GIB:g} GiB budget")

    # --- the grid's shape ------------------------------------------------------------------
    def _axes(self, candidates: list[Candidate]) -> list[Axis]:
        axes = []
        for name in AXIS_FIELDS:
            values: list[Any] = []
            for c in candidates:
                if c.coords[name] not in values:
                    values.append(c.coords[name])
            if len(values) < 2:
                continue
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if numeric:
                values = sorted(values)
            kind = ("batch_cap" if name == "max_batch_size" and numeric and self.ladder_max is not None
                    else "ordinal" if numeric else "categorical")
            axes.append(Axis(name=name, values=values, kind=kind, knob=self.names.get(name, name)))
        return axes

    def _key(self, coords: dict[str, Any]) -> tuple:
        return tuple(coords[a.name] for a in self.axes)

    def _axis(self, kind: str) -> Axis | None:
        return next((a for a in self.axes if a.kind == kind), None)

    def neighbours(self, label: str) -> list[tuple[str, Axis, Any, Any]]:
        """(neighbour, axis, value here, value there) in the order the search tries them."""
        coords = self.candidates[label].coords
        out = []
        for axis in self.axes:
            here = coords[axis.name]
            i = axis.values.index(here)
            others = ([axis.values[j] for j in (i - 1, i + 1) if 0 <= j < len(axis.values)]
                      if axis.kind != "categorical" else [v for v in axis.values if v != here])
            for value in others:
                other = self._by_coords.get(self._key({**coords, axis.name: value}))
                if other is not None:
                    out.append((other, axis, here, value))
        return out

    # --- the rules that rule a configuration out without starting it ------------------------
    def rule_out(self, label: str) -> tuple[str, str] | None:
        """(rule, why) when a measured configuration shows that `label` cannot beat it beyond the noise."""
        cap = self._axis("batch_cap")
        if cap is None:
            return None
        knob = cap.knob
        coords = self.candidates[label].coords
        mine = coords[cap.name]
        for other, m in self.measured.items():
            oc = self.candidates[other].coords
            if m.failed or any(oc[a.name] != coords[a.name] for a in self.axes if a is not cap):
                continue
            theirs = oc[cap.name]
            if theirs > mine:
                return SKIP_DOMINATED, (
                    f"dominated by {other} ({knob} {theirs} > {mine}, otherwise the same): its ladder "
                    f"already ran every load up to this cap, where a lower cap changes nothing, and its best "
                    f"clean level was {describe_goodput(m)}; this one cannot beat it beyond the noise")
            cap_bound = m.ladder_stop == STOP_CEILING and self.ladder_max is not None and theirs < self.ladder_max
            if theirs < mine and not cap_bound:
                return SKIP_SAME_LADDER, (
                    f"{other} ({knob} {theirs}) stopped its ladder at {m.ladder_stop or 'its end'} without "
                    f"reaching its cap; with a higher cap ({mine}) the ladder runs the same rungs and stops the "
                    f"same way ({describe_goodput(m)})")
        return None

    def _skip(self, label: str, rule: str, why: str) -> None:
        self.skipped[label] = Skipped(config=label, rule=rule, why=why)

    def _open(self, label: str) -> bool:
        return label not in self.measured and label not in self.skipped

    # --- choosing -------------------------------------------------------------------------
    def _start(self) -> tuple[str, str] | None:
        fitting = [c for c in self.candidates.values() if self._open(c.label)]
        if not fitting:
            return None
        target: dict[str, int] = {}
        words = []
        for axis in self.axes:
            n = len(axis.values)
            if axis.kind == "batch_cap":
                target[axis.name] = n - 1
            elif axis.kind == "ordinal":
                target[axis.name] = (n - 1) // 2
            else:
                target[axis.name] = 0

        def distance(c: Candidate) -> int:
            return sum(abs(a.values.index(c.coords[a.name]) - target[a.name]) for a in self.axes)

        start = min(fitting, key=distance)  # the first of equals in grid order
        for axis in self.axes:
            value = _fmt(start.coords[axis.name])
            if axis.kind == "batch_cap":
                words.append(f"{axis.knob} {value}, the highest that fits the budget (its ladder also runs "
                             "every lower cap's loads)")
            elif axis.kind == "ordinal":
                words.append(f"{axis.knob} {value}, the middle of {_fmt(axis.values[0])}..{_fmt(axis.values[-1])}")
            else:
                words.append(f"{axis.knob} {value}, the first listed")
        return start.label, "start: " + ("; ".join(words) if words else "the only configuration")

    def _move(self) -> tuple[str, str] | None:
        anchor = self.anchor
        for other, axis, here, there in self.neighbours(anchor) if anchor else []:
            if not self._open(other):
                continue
            ruled = self.rule_out(other)
            if ruled is not None:
                self._skip(other, *ruled)
                continue
            return other, (f"neighbour of {anchor} ({describe_goodput(self.measured[anchor])}), the best beyond the "
                           f"noise so far, along {axis.knob}: {_fmt(here)} -> {_fmt(there)}")
        return None

    def next_config(self) -> tuple[str, str] | None:
        """(label, why it is started) or None once the search is over; the same until recorded."""
        if self._pending is not None:
            return self._pending
        if self.stop_reason is not None:
            return None
        if self.options.max_starts is not None and len(self.steps) >= self.options.max_starts:
            return self._stop(STOP_MAX_STARTS, f"max_starts {self.options.max_starts} reached")
        if not self.measured:
            picked = self._start()
            if picked is None:
                return self._stop(STOP_NOTHING_FITS, "every configuration is over the VRAM budget")
        else:
            picked = self._move()
            if picked is None and self.anchor is not None:
                return self._stop(STOP_CONVERGED, f"every neighbour of {self.anchor}, the best beyond the noise, is "
                                                  "measured or cannot beat it beyond the noise")
            if picked is None:
                picked = self._fallback()
            if picked is None:
                return self._stop(STOP_EXHAUSTED, "no configuration left to start")
        self._pending = picked
        return picked

    def _fallback(self) -> tuple[str, str] | None:
        """No configuration has met the limits yet: the nearest open one to the last measured."""
        last = self.steps[-1].config
        order = [n for n, *_ in self.neighbours(last)] + list(self.candidates)
        for label in order:
            if not self._open(label):
                continue
            ruled = self.rule_out(label)
            if ruled is not None:
                self._skip(label, *ruled)
                continue
            return label, (f"no configuration has met the limits yet ({last}: "
                           f"{describe_goodput(self.measured[last])}); the next open one near it")
        return None

    def _stop(self, reason: str, detail: str) -> None:
        self.stop_reason, self.stop_detail = reason, detail
        for label in self.candidates:
            if not self._open(label):
                continue
            ruled = self.rule_out(label)
            if ruled is not None:
                self._skip(label, *ruled)
            elif reason == STOP_CONVERGED:
                self._skip(label, SKIP_NOT_REACHED, (
                    f"not a neighbour of {self.anchor}, the best beyond the noise; the search moves only to a "
                    "neighbour that beats it beyond the noise and takes goodput as rising and falling at most "
                    "once along each ordinal axis, so a configuration beyond a measured neighbour is not "
                    "expected to beat it"))
            else:
                self._skip(label, SKIP_NOT_REACHED, f"the search stopped first ({reason}: {detail})")
        return None

    # --- recording ------------------------------------------------------------------------
    def record(self, label: str, measured: Measured, resumed: bool = False, wall_s: float | None = None) -> Step:
        if self._pending is None or self._pending[0] != label:
            raise ValueError(f"recorded {label!r}, but the search asked for "
                             f"{None if self._pending is None else self._pending[0]!r}")
        why = self._pending[1]
        self._pending = None
        self.measured[label] = measured
        previous = self.anchor
        if previous is None:
            moved = measured.goodput is not None
            verdict = "the first configuration that met the limits: the best so far" if moved else \
                "met no limit-clean level"
        else:
            m_prev = self.measured[previous]
            moved = beats(measured, m_prev, self.options.noise_floor)
            gap = noise(measured, m_prev, self.options.noise_floor)
            if moved:
                verdict = (f"beats {previous} ({describe_goodput(m_prev)}) by more than the noise "
                           f"({gap:.3g} req/s): new best, the search moves here")
            elif measured.goodput is not None and measured.goodput > (m_prev.goodput or 0):
                verdict = (f"above {previous} by {measured.goodput - (m_prev.goodput or 0):.3g} req/s, inside the "
                           f"noise ({gap:.3g}): no move (the search goes on from {previous}'s neighbours)")
            else:
                verdict = f"not above {previous} ({describe_goodput(m_prev)})"
        if moved:
            self.anchor = label
        step = Step(n=len(self.steps) + 1, config=label, why=why, measured=measured, best_after=self.best,
                    moved=moved, verdict=verdict, resumed=resumed, wall_s=wall_s)
        self.steps.append(step)
        return step

    @property
    def best(self) -> str | None:
        """The highest goodput measured (the first of equals): what the report recommends from."""
        scored = [(m.goodput, -i, label) for i, (label, m) in enumerate(self.measured.items()) if m.goodput is not None]
        return max(scored)[2] if scored else None

    def record_model(self, wall_s: float, vram_budget_gib: float | None) -> ConfigSearchRecord:
        """search.json as it stands (also mid-search: stop_reason None)."""
        best = None
        no_best = None
        if self.best is not None:
            m = self.measured[self.best]
            best = Best(config=self.best, goodput=m.goodput or 0.0, level=m.level, output_tok_s=m.output_tok_s,
                        goodput_ci95_half=m.goodput_ci95_half)
        elif self.stop_reason is not None:
            no_best = (f"no configuration met the limits ({self.stop_reason}: {self.stop_detail}); "
                       f"{len(self.steps)} started, {len(self.skipped)} skipped")
        order = list(self.candidates)
        return ConfigSearchRecord(
            objective=OBJECTIVE, noise_rule=NOISE_RULE, noise_floor=self.options.noise_floor,
            vram_budget_gib=vram_budget_gib, axes=self.axes, grid_size=len(self.candidates),
            starts=len(self.steps), best=best, anchor=self.anchor, no_best=no_best, stop_reason=self.stop_reason,
            stop_detail=self.stop_detail, steps=self.steps,
            skipped=sorted(self.skipped.values(), key=lambda s: order.index(s.config)), wall_s=wall_s)
