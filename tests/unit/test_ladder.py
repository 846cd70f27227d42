"""Adaptive load ladder and rate search on synthetic curves with known answers."""

from typing import Callable

import orjson
import pytest

from servesweep.loadgen.stats import SLO
from servesweep.analysis.knee import find_knee
from servesweep.scenarios.schema import SLOSpec
from servesweep.sweep.ladder import (
    REASON_BISECT,
    REASON_BISECT_KNEE,
    REASON_BISECT_SLO,
    REASON_DOUBLE,
    REASON_HALVE,
    STOP_CEILING,
    STOP_FAILURES,
    STOP_GOODPUT,
    STOP_KNEE,
    STOP_KV_FULL,
    STOP_PREEMPTION,
    STOP_SLO,
    ConcurrencyLadder,
    LadderConfig,
    RateSearch,
    RateSearchConfig,
)
from servesweep.results.points import SweepPoint
from servesweep.sweep.observation import Observation


def obs(tput: float, **kw) -> Observation:
    kw.setdefault("preemptions", 0)
    kw.setdefault("kv_peak_frac", 0.5)
    return Observation(output_tok_s=tput, **kw)


def drive(search, curve: Callable, limit: int = 50) -> list:
    levels = []
    while (level := search.next_level()) is not None:
        assert len(levels) < limit, "search did not end"
        levels.append(level)
        search.record(level, curve(level))
    assert search.done
    return levels


def saturating(c: int) -> float:
    return 1000.0 * c / (c + 8)


# --- concurrency ladder -------------------------------------------------------------------------

def test_linear_growth_runs_to_the_ceiling_without_bisection():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=64))
    assert drive(ladder, lambda c: obs(100.0 * c)) == [1, 2, 4, 8, 16, 32, 64]
    assert ladder.stop_reason == STOP_CEILING
    assert {r.reason for r in ladder.rungs} == {REASON_DOUBLE}
    assert ladder.recommended_concurrency == 64
    assert ladder.knee()["knee_reached"] is False


def test_a_ceiling_off_the_doubling_grid_is_run_itself():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=48))
    assert drive(ladder, lambda c: obs(100.0 * c)) == [1, 2, 4, 8, 16, 32, 48]
    assert ladder.stop_reason == STOP_CEILING


def test_saturating_curve_stops_at_the_knee_and_bisects_between_the_last_two_rungs():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=256, bisect_steps=3))
    levels = drive(ladder, lambda c: obs(saturating(c)))
    # Per slot at c=1: 111.1 tok/s. 8->16 adds 20.8/slot (18.75 %), 16->32 adds 8.3/slot (7.5 %): knee 16.
    assert levels[:6] == [1, 2, 4, 8, 16, 32]
    assert ladder.stop_reason == STOP_KNEE
    # 24: 16->24 is 9.4 % -> knee stays 16; 20: 16->20 is 10.7 %, 20->24 8.0 % -> knee 20; 22: 20->22 8.6 %.
    assert levels[6:] == [24, 20, 22]
    assert [r.reason for r in ladder.rungs[6:]] == [REASON_BISECT_KNEE] * 3
    knee = ladder.knee()
    assert knee["knee_reached"] and knee["knee_batch_size"] == 20
    assert ladder.recommended_concurrency == 20
    # The ladder's knee is analysis.py's definition applied to its rungs, nothing else.
    assert knee == find_knee(sorted(levels), [saturating(c) for c in sorted(levels)])


def test_knee_bisection_ends_at_adjacent_integers_without_repeats():
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=10))
    levels = drive(ladder, lambda c: obs(saturating(c)))
    assert levels[6:] == [24, 20, 22, 21]
    assert len(set(levels)) == len(levels)
    assert ladder.knee()["knee_batch_size"] == 20  # 20->21 adds 8.9 % of the first slot


def test_knee_threshold_is_configurable():
    ladder = ConcurrencyLadder(LadderConfig(knee_threshold=0.2, bisect_steps=0))
    drive(ladder, lambda c: obs(saturating(c)))
    # 8->16 is 18.75 % < 20 %: the knee is reached one rung earlier.
    assert [r.level for r in ladder.rungs] == [1, 2, 4, 8, 16]
    assert ladder.stop_reason == STOP_KNEE and ladder.recommended_concurrency == 8


def test_slo_broken_at_32_bisects_the_edge_between_16_and_32():
    slo = SLOSpec(ttft_ms=300.0, percentile=99)
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=3), slo=slo)
    levels = drive(ladder, lambda c: obs(100.0 * c, ttft_ms=10.0 * c))  # p99 TTFT 10 ms per user: 320 > 300 at 32
    assert levels == [1, 2, 4, 8, 16, 32, 24, 28, 30]
    assert ladder.stop_reason == STOP_SLO
    assert all(16 < r.level < 32 and r.reason == REASON_BISECT_SLO for r in ladder.rungs[6:])
    assert ladder.slo_edge() == (30, 32)  # 300 ms at 30 is within the limit
    assert ladder.recommended_concurrency == 30
    assert ladder.rungs[5].detail == ["ttft_ms p99 320.0 > 300"]


def test_slo_edge_to_adjacent_integers():
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=8), slo=SLO(tpot_ms=31.0))
    drive(ladder, lambda c: obs(100.0 * c, tpot_ms=float(c)))
    assert ladder.slo_edge() == (31, 32)
    assert ladder.recommended_concurrency == 31


def test_knee_and_slo_in_the_same_bracket_are_both_bisected():
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=3), slo=SLO(ttft_ms=300.0))
    levels = drive(ladder, lambda c: obs(saturating(c), ttft_ms=10.0 * c))
    assert ladder.stop_reason == STOP_SLO  # the SLO outranks the knee at the same rung
    # Knee first; its rung 24 already narrowed the SLO bracket to (24, 32); 31 breaks it (310 ms).
    assert levels[6:] == [24, 20, 22, 28, 30, 31]
    assert [r.reason for r in ladder.rungs[6:]] == [REASON_BISECT_KNEE] * 3 + [REASON_BISECT_SLO] * 3
    assert ladder.slo_edge() == (30, 31)
    assert ladder.recommended_concurrency == 20  # the knee is below the SLO edge


@pytest.mark.parametrize("bad, reason", [
    (dict(failed=2), STOP_FAILURES),
    (dict(preemptions=3), STOP_PREEMPTION),
    (dict(kv_peak_frac=0.95), STOP_KV_FULL),
])
def test_hard_limits_stop_at_once(bad, reason):
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=3), slo=SLO(ttft_ms=1e9))
    levels = drive(ladder, lambda c: obs(100.0 * c, ttft_ms=10.0, **(bad if c == 8 else {})))
    assert levels == [1, 2, 4, 8]
    assert ladder.stop_reason == reason
    assert ladder.recommended_concurrency == 4


def test_kv_just_below_full_does_not_stop():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=8))
    drive(ladder, lambda c: obs(100.0 * c, kv_peak_frac=0.949))
    assert ladder.stop_reason == STOP_CEILING


def test_failures_outrank_the_slo_on_the_same_rung():
    ladder = ConcurrencyLadder(slo=SLO(ttft_ms=100.0))
    drive(ladder, lambda c: obs(100.0 * c, ttft_ms=500.0 if c == 4 else 50.0, failed=1 if c == 4 else 0))
    assert ladder.stop_reason == STOP_FAILURES
    assert ladder.rungs[-1].limits == [STOP_FAILURES, STOP_SLO]


def test_a_hard_limit_while_bisecting_ends_the_search():
    ladder = ConcurrencyLadder(LadderConfig(bisect_steps=3), slo=SLO(ttft_ms=300.0))
    levels = drive(ladder, lambda c: obs(100.0 * c, ttft_ms=10.0 * c, preemptions=1 if c == 24 else 0))
    assert levels == [1, 2, 4, 8, 16, 32, 24]
    assert ladder.stop_reason == STOP_PREEMPTION
    assert ladder.recommended_concurrency == 16


def test_slo_broken_at_concurrency_one_recommends_nothing():
    ladder = ConcurrencyLadder(slo=SLO(e2e_ms=100.0))
    assert drive(ladder, lambda c: obs(10.0, e2e_ms=150.0)) == [1]
    assert ladder.stop_reason == STOP_SLO and ladder.recommended_concurrency is None


def test_unmeasured_slo_metric_breaks_the_slo():
    ladder = ConcurrencyLadder(slo=SLO(ttft_ms=100.0))
    drive(ladder, lambda c: obs(10.0, ttft_ms=None))
    assert ladder.stop_reason == STOP_SLO
    assert "not measured" in ladder.rungs[0].detail[0]


def test_next_level_repeats_until_recorded_and_rejects_other_levels():
    ladder = ConcurrencyLadder()
    assert ladder.next_level() == 1 and ladder.next_level() == 1
    with pytest.raises(ValueError, match="asked for 1"):
        ladder.record(2, obs(1.0))
    ladder.record(1, obs(100.0))
    assert ladder.next_level() == 2


def test_ladder_to_dict_is_json():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=4), slo=SLOSpec(ttft_ms=500.0, percentile=90))
    drive(ladder, lambda c: obs(100.0 * c, ttft_ms=10.0, percentile=90))
    data = orjson.loads(orjson.dumps(ladder.to_dict()))
    assert data["stop_reason"] == "ceiling" and data["recommended_concurrency"] == 4
    assert data["slo"] == {"ttft_ms": 500.0, "percentile": 90}
    assert [r["concurrency"] for r in data["rungs"]] == [1, 2, 4]
    assert data["rungs"][0]["observation"]["oom_margin_pct"] == 50.0
    assert data["rungs"][0]["reason"] == "double"


def test_observation_from_a_sweep_point():
    point = {
        "config": "bf16", "config_spec": {}, "level": "c8", "status": "ok",
        "summary": {"failed": 0, "output_token_throughput": 950.0, "request_throughput": 4.0,
                    "goodput": {"request_goodput": 3.5}, "ttft_ms": {"p90": 80.0, "p99": 120.0},
                    "tpot_ms": {"p90": 9.0, "p99": 11.0}, "e2e_ms": {"p90": 900.0, "p99": 1100.0}},
        "telemetry": {"preemptions": 0.0, "kv_cache_peak_frac": 0.7, "running_batch_mean": 7.5, "waiting_peak": 2.0},
    }
    o = Observation.from_point(SweepPoint.model_validate(point), percentile=90)
    assert (o.output_tok_s, o.request_goodput, o.request_rate) == (950.0, 3.5, 4.0)
    assert (o.ttft_ms, o.tpot_ms, o.e2e_ms, o.preemptions) == (80.0, 9.0, 900.0, 0)
    assert o.oom_margin_pct == pytest.approx(30.0)
    died = Observation.from_point(SweepPoint.model_validate({"config": "bf16", "config_spec": {}, "level": "c8",
                                                             "status": "failed", "cause": "server died"}))
    assert died.failed == 1 and died.output_tok_s == 0.0


# --- rate search --------------------------------------------------------------------------------

def capacity_curve(capacity: float) -> Callable[[float], Observation]:
    """A server that keeps up to `capacity` req/s, then queues without bound (TTFT explodes)."""
    def observe(rate: float) -> Observation:
        kept = min(rate, capacity)
        over = rate > capacity
        return obs(kept * 100, request_rate=kept, request_goodput=0.98 * kept, ttft_ms=5000.0 if over else 50.0,
                   running_batch_mean=kept * 0.5, waiting_peak=40.0 if over else 0.0,
                   kv_peak_frac=0.9 if over else 0.4)
    return observe


def test_rate_search_converges_below_the_capacity_within_tolerance():
    search = RateSearch(RateSearchConfig(start_rate=1.0, max_rate=1000.0, rel_tol=0.1), slo=SLO(ttft_ms=500.0))
    levels = drive(search, capacity_curve(37.0))
    assert levels == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 48.0, 40.0, 36.0, 38.0]
    assert search.stop_reason == STOP_SLO
    assert [r.reason for r in search.rungs[7:]] == [REASON_BISECT] * 4
    lo, hi = search.bracket()
    assert (lo, hi) == (36.0, 38.0) and hi / lo - 1 <= 0.1
    assert search.best_rate == 36.0 <= 37.0


def test_rate_search_halves_when_the_start_rate_fails():
    search = RateSearch(RateSearchConfig(start_rate=64.0), slo=SLO(ttft_ms=500.0))
    levels = drive(search, capacity_curve(10.0))
    assert levels == [64.0, 32.0, 16.0, 8.0, 12.0, 10.0, 11.0]
    assert [r.reason for r in search.rungs[1:4]] == [REASON_HALVE] * 3
    assert search.best_rate == 10.0


def test_rate_search_gives_up_after_the_halvings():
    search = RateSearch(RateSearchConfig(start_rate=8.0, max_halvings=2), slo=SLO(ttft_ms=500.0))
    assert drive(search, capacity_curve(0.5)) == [8.0, 4.0, 2.0]
    assert search.best_rate is None and search.stop_reason == STOP_SLO


def test_rate_search_without_slos_stops_on_goodput_shortfall():
    search = RateSearch(RateSearchConfig(start_rate=4.0, rel_tol=0.25))
    drive(search, capacity_curve(20.0))
    # At 32 req/s the server completes 20 x 0.98 = 19.6/s < 0.9 x 32.
    assert search.rungs[3].level == 32.0 and search.rungs[3].limits == [STOP_GOODPUT]
    assert search.stop_reason == STOP_GOODPUT
    assert search.best_rate == 20.0


def test_rate_search_bisects_below_failures():
    def curve(rate: float) -> Observation:
        return obs(rate * 100, request_goodput=rate, failed=3 if rate > 12 else 0)
    search = RateSearch(RateSearchConfig(rel_tol=0.05), slo=None)
    drive(search, curve)
    assert search.stop_reason == STOP_FAILURES
    assert search.best_rate == 12.0


def test_rate_search_ceiling_records_evidence():
    search = RateSearch(RateSearchConfig(start_rate=1.0, max_rate=50.0), slo=SLO(ttft_ms=500.0))
    assert drive(search, capacity_curve(1000.0)) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 50.0]
    assert search.stop_reason == STOP_CEILING and search.best_rate == 50.0
    data = orjson.loads(orjson.dumps(search.to_dict()))
    last = data["rungs"][-1]
    assert last["request_rate"] == 50.0
    assert last["observation"]["running_batch_mean"] == 25.0 and last["observation"]["waiting_peak"] == 0.0
    assert last["observation"]["kv_peak_frac"] == 0.4 and last["observation"]["preemptions"] == 0


def test_rate_search_config_rejects_a_start_above_the_ceiling():
    with pytest.raises(ValueError, match="above max_rate"):
        RateSearchConfig(start_rate=10.0, max_rate=5.0)
