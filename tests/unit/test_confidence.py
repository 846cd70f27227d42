"""Repeats and their intervals (servesweep.confidence) and the noise-aware searches (issue 25).

Deterministic "noise": per-repeat values are written out, no timing is measured."""

import json
import math

import pytest

from servesweep.confidence import (
    base_label,
    expand_repeats,
    interval,
    more_repeats,
    parse_precision,
    precision_of,
    repeats_ci,
    welch_gain,
)
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.stats import SLO
from servesweep.prefix_check import prefix_cache_summary
from servesweep.scenarios.schema import LoadSpec
from servesweep.sweep.ladder import STOP_KNEE, ConcurrencyLadder, LadderConfig, RateSearch, noise_aware_throughputs
from servesweep.sweep.observation import Observation, slo_uncertain
from servesweep.sweep.sweep_runner import merge_extra_repeat


def repeated(tputs, ttft=None, percentile=99, **kw) -> Observation:
    """An observation of len(tputs) repeats with the interval servesweep.confidence gives them."""
    fields = {"output_tok_s": tputs}
    if ttft is not None:
        fields["ttft_ms"] = ttft
    means, ci, samples = {}, {}, {}
    for name, values in fields.items():
        iv = interval(values)
        means[name] = iv["mean"]
        samples[name] = tuple(values)
        if iv["low"] is not None:
            ci[name] = (iv["low"], iv["high"])
    return Observation(**means, percentile=percentile, n=len(tputs), ci95=ci, samples=samples, **kw)


def test_t_interval_over_three_repeats():
    iv = interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert iv["mean"] == 2.0 and iv["n"] == 3
    assert iv["low"] == pytest.approx(2.0 - half) and iv["high"] == pytest.approx(2.0 + half)
    assert iv["method"] == "student-t over repeats"
    one = interval([5.0, None])
    assert one["mean"] == 5.0 and one["low"] is None and one["n"] == 1


def test_repeat_labels_group_back_to_their_level():
    levels = expand_repeats([LoadLevel(concurrency=4, num_requests=8)], 3)
    assert [lv.label for lv in levels] == ["c4#r1", "c4#r2", "c4#r3"]
    assert base_label("c4#r2") == "c4" and base_label("r0.5#r1") == "r0.5" and base_label("c4") == "c4"
    assert expand_repeats(levels[:1], 1) == levels[:1]
    entries = [{"label": f"c4#r{i}", "output_token_throughput": v, "request_throughput": 1.0,
                "ttft_ms": {"p50": 10.0, "p99": 20.0 + i}} for i, v in enumerate([100.0, 110.0, 90.0], 1)]
    ci = repeats_ci(entries)
    assert set(ci) == {"c4"} and ci["c4"]["output_tok_s"]["mean"] == pytest.approx(100.0)
    assert ci["c4"]["ttft_ms.p99"]["values"] == [21.0, 22.0, 23.0]


def _point(**fields):
    from servesweep.results.points import SweepPoint

    return SweepPoint.model_validate({"config": "bf16", "config_spec": {"precision": "bf16"}, "level": "c8", **fields})


def test_observation_from_a_point_with_repeats_takes_means_and_intervals():
    ci = repeats_ci([{"label": f"c8#r{i}", "output_token_throughput": v, "goodput": {"request_goodput": 2.0},
                      "ttft_ms": {"p50": 5.0, "p99": t}} for i, (v, t) in enumerate([(100, 900), (120, 1100)], 1)])
    point = _point(status="ok", summary={"output_token_throughput": 999.0, "ci95": ci, "ttft_ms": {"p99": 5000.0}},
                   telemetry={})
    obs = Observation.from_point(point, 99)
    assert obs.n == 2 and obs.output_tok_s == 110.0 and obs.ttft_ms == 1000.0
    assert obs.ci95["ttft_ms"][0] < 1000.0 < obs.ci95["ttft_ms"][1]
    assert Observation.from_dict(json.loads(json.dumps(obs.to_dict()))) == obs
    # One window: no interval, as before.
    single = Observation.from_point(_point(status="ok", summary={"output_token_throughput": 5.0}), 99)
    assert single.n == 1 and single.ci95 is None


def test_an_slo_verdict_whose_interval_straddles_the_limit_is_uncertain():
    slo = SLO(ttft_ms=1000)
    assert slo_uncertain(repeated([100, 100, 100], ttft=[900, 1000, 1126]), slo)
    assert not slo_uncertain(repeated([100, 100, 100], ttft=[500, 510, 520]), slo)  # clearly met
    assert not slo_uncertain(repeated([100, 100, 100], ttft=[2000, 2010, 2020]), slo)  # clearly broken
    assert not slo_uncertain(Observation(output_tok_s=1.0, ttft_ms=1000.0), slo)  # no interval


def test_uncertain_rung_gets_repeats_up_to_the_cap_and_says_so():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=4), SLO(ttft_ms=1000), max_repeats=4)
    assert ladder.next_level() == 1
    straddles = repeated([100, 101, 99], ttft=[900, 1000, 1126])
    assert ladder.wants_repeat(straddles)  # n=3 < 4: once more
    at_cap = repeated([100, 101, 99, 100], ttft=[900, 1000, 1126, 990])
    assert ladder.wants_repeat(at_cap) == []
    assert ladder.wants_repeat(repeated([100, 101, 99], ttft=[500, 510, 520])) == []
    ladder.record(1, at_cap)
    rung = ladder.rungs[0]
    assert rung.uncertain and any("uncertain" in d for d in rung.detail)
    out = ladder.to_dict()
    assert out["uncertainty"]["uncertain_rungs"] == {"1": rung.uncertain}
    assert "still uncertain" in out["uncertainty"]["note"]
    json.dumps(out)


def test_rate_search_repeats_an_uncertain_rung_too():
    search = RateSearch(slo=SLO(ttft_ms=1000), max_repeats=3)
    assert search.wants_repeat(repeated([10, 10], ttft=[900, 1100]))
    assert "uncertainty" in search.to_dict()


def test_a_gain_inside_the_noise_is_not_a_gain():
    # Means 100, 200, 400, 453: one more slot from 4 to 8 adds 13 tok/s, above the 10 % knee
    # threshold (10 tok/s), so without intervals the ladder doubles on...
    curve = {1: [98, 100, 102], 2: [198, 200, 202], 4: [400, 440, 360], 8: [470, 390, 500]}
    plain = ConcurrencyLadder(LadderConfig(max_concurrency=64, bisect_steps=0))
    noisy = ConcurrencyLadder(LadderConfig(max_concurrency=64, bisect_steps=0), max_repeats=3)
    for c in (1, 2, 4, 8):
        assert plain.next_level() == c and noisy.next_level() == c
        mean = sum(curve[c]) / 3
        plain.record(c, Observation(output_tok_s=mean))
        noisy.record(c, repeated(curve[c]))
    assert plain.stop_reason is None and plain.next_level() == 16
    # ...but the gain's 95 % Welch interval holds 0: 8 is flat, the knee is at 4.
    assert noisy.stop_reason == STOP_KNEE and noisy.next_level() is None
    knee = noisy.knee()
    assert knee["knee_batch_size"] == 4 and knee["noise_aware"]["flat_within_noise"] == [8.0]
    assert noisy.recommended_concurrency == 4
    assert "c4:" in noisy.to_dict()["uncertainty"]["note"]


def test_a_dip_inside_the_noise_does_not_make_the_curve_non_monotone():
    # The one-window ladder's failure: a rung reading below its lower neighbour (8: 390 < 4: 400).
    rungs = ConcurrencyLadder(LadderConfig(max_concurrency=64, bisect_steps=0), max_repeats=3)
    curve = {1: [99, 100, 101], 2: [190, 200, 210], 4: [380, 420, 400], 8: [350, 430, 390]}
    for c in (1, 2, 4, 8):
        rungs.next_level()
        rungs.record(c, repeated(curve[c]))
    levels, tputs, flat = noise_aware_throughputs(rungs.rungs)
    assert tputs == [100.0, 200.0, 400.0, 400.0] and flat == [8.0]
    assert rungs.stop_reason == STOP_KNEE and rungs.recommended_concurrency == 4


def test_a_real_gain_counts_and_a_real_drop_stays_a_drop():
    r = ConcurrencyLadder(LadderConfig(max_concurrency=8, bisect_steps=0), max_repeats=3)
    for c, vals in ((1, [99, 100, 101]), (2, [199, 200, 201]), (4, [150, 151, 149])):
        r.next_level()
        r.record(c, repeated(vals))
    _, tputs, flat = noise_aware_throughputs(r.rungs)
    assert tputs == [100.0, 200.0, 150.0] and flat == []
    assert r.stop_reason == STOP_KNEE and r.knee()["knee_batch_size"] == 2


def test_welch_gain():
    diff, low = welch_gain([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert diff == 1.0 and low == 1.0  # no spread: the difference is exact
    assert welch_gain([1.0], [3.0, 4.0]) == (2.5, None)


def test_merge_extra_repeat_adds_a_value_to_the_rung():
    ci = repeats_ci([{"label": f"c4#r{i}", "output_token_throughput": v, "ttft_ms": {"p99": t}}
                     for i, (v, t) in enumerate([(100, 900), (110, 1100)], 1)])
    point = _point(level="c4", status="ok", summary={"ci95": ci, "repeats": 2, "completed": 8, "failed": 0},
                   telemetry={"preemptions": 0, "kv_cache_peak_frac": 0.5})
    more = _point(level="c4", status="ok", dir="c4/extra-1",
                  summary={"output_token_throughput": 105.0, "ttft_ms": {"p99": 950.0}, "completed": 4, "failed": 0},
                  telemetry={"preemptions": 1, "kv_cache_peak_frac": 0.7})
    merge_extra_repeat(point, more, ["ttft uncertain"])
    obs = Observation.from_point(point, 99)
    assert obs.n == 3 and obs.samples["output_tok_s"] == (100.0, 110.0, 105.0)
    assert point.summary.completed == 12 and point.telemetry.preemptions == 1
    assert point.telemetry.kv_cache_peak_frac == 0.7 and point.extra_repeats[0]["dir"] == "c4/extra-1"
    # The headline follows the merged repeats (a view of ci95); the point's own figure stays the load test's.
    assert point.summary.headline_output_token_throughput == pytest.approx(105.0)
    assert point.summary.output_token_throughput is None and "pooled_over_repeats" not in point.to_file()["summary"]


def test_scenario_repeats_and_cap():
    load = LoadSpec(concurrency="auto", repeats=3)
    assert load.repeat_cap == 6 and LoadSpec(concurrency=[1]).repeat_cap == 1
    assert LoadSpec(concurrency="auto", repeats=3, max_repeats=4).repeat_cap == 4
    with pytest.raises(ValueError, match="max_repeats 2 is below repeats 3"):
        LoadSpec(concurrency="auto", repeats=3, max_repeats=2)


def test_prefix_cache_contamination_is_flagged_unless_intended():
    levels = [{"label": "c1", "completed": 10, "total_prompt_tokens": 1000,
               "telemetry": {"prefix_cache_hit_rate": 0.30}},
              {"label": "c2", "completed": 10, "total_prompt_tokens": 1000,
               "telemetry": {"prefix_cache_hit_rate": 0.01}},
              {"label": "c4", "completed": 10, "telemetry": {"prefix_cache_hit_rate": None}}]
    got, warnings = prefix_cache_summary(levels, 0, sessions=False)
    assert got["c1"]["warn"] and not got["c2"]["warn"] and "c4" not in got
    assert len(warnings) == 1 and "level c1: 30%" in warnings[0]
    # A shared prefix of 25 of 100 prompt tokens explains 25 points of the 30.
    got, warnings = prefix_cache_summary(levels[:1], 25, sessions=False)
    assert got["c1"]["expected_share"] == 0.25 and got["c1"]["unintended"] == pytest.approx(0.05)
    assert not got["c1"]["warn"] and warnings == []
    got, _ = prefix_cache_summary(levels[:1], 0, sessions=True)
    assert got["c1"]["expected_share"] is None and not got["c1"]["warn"]


class _Result:
    def __init__(self, label, tput):
        self.level = LoadLevel(concurrency=4, num_requests=4, name=label)
        self.summary = {"output_token_throughput": tput}


def test_target_precision_asks_for_repeats_until_narrow_or_capped():
    decide = more_repeats(0.05, cap=4)
    r1, r2 = _Result("c4#r1", 100.0), _Result("c4#r2", 140.0)
    # another repeat of c4 is planned already: nothing to add
    assert decide(r1, [r1], [LoadLevel(concurrency=4, num_requests=4, name="c4#r2")]) == []
    # two repeats 40 % apart: far wider than 5 %: a third
    [more] = decide(r2, [r1, r2], [])
    assert more.label == "c4#r3" and more.concurrency == 4
    r3, r4 = _Result("c4#r3", 120.0), _Result("c4#r4", 120.0)
    assert decide(r4, [r1, r2, r3, r4], []) == []  # the cap
    tight = [_Result(f"c4#r{i}", v) for i, v in enumerate([100.0, 100.5, 99.5], 1)]
    assert decide(tight[-1], tight, []) == [] and precision_of(interval([100.0, 100.5, 99.5])) < 0.05
    assert parse_precision("5%") == 0.05 and parse_precision("0.05") == 0.05
    with pytest.raises(ValueError):
        parse_precision("150%")
    assert LoadSpec(concurrency=[1], target_precision=0.05).repeat_cap == 10


def test_a_gain_inside_the_noise_gets_repeats_before_the_knee_takes_it_as_flat():
    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=8, bisect_steps=0), max_repeats=5)
    ladder.next_level()
    ladder.record(1, repeated([437, 475, 326]))  # the CPU run's c1: a busy machine
    assert ladder.next_level() == 2
    noisy = repeated([918, 759, 468])
    [why] = ladder.wants_repeat(noisy)
    assert why.startswith("output tok/s gain over 1 inside the noise")
    assert ladder.wants_repeat(repeated([918, 759, 468, 800, 850])) == []  # the cap
    assert ladder.wants_repeat(repeated([800, 810, 790])) == []  # a clear gain
    assert ConcurrencyLadder(max_repeats=5).wants_repeat(noisy) == []  # nothing pending to compare


def test_binomial_interval_is_wilsons():
    from scipy.stats import binomtest

    from servesweep.confidence import binomial_interval

    for k, n in [(150, 200), (0, 40), (40, 40), (7, 13)]:
        want = binomtest(k, n).proportion_ci(method="wilson")
        low, high = binomial_interval(k, n)
        assert low == pytest.approx(want.low, abs=1e-6) and high == pytest.approx(want.high, abs=1e-6)
