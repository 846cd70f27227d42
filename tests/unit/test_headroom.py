"""The headroom measurement's arithmetic without a server: onsets from known steps, the length-tail
model on lengths whose answer is known, the search loop on canned steps (resume, deadline), and
the recommendation's headroom block and wording."""

import json

import pytest
from rich.console import Console

from servesweep.loadgen.lengths import LengthSpec
from servesweep.loadgen.stats import SLO
from servesweep.analysis.selection import apply_headroom
from servesweep.reports.headroom import console_line, headroom_lines
from servesweep.results.headroom import HeadroomStep, read_headroom
from servesweep.results.recommendation import ProductionRecommendation
from servesweep.scenarios.schema import HeadroomSpec, load_scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.headroom_plan import (
    device_memory,
    find_length_onsets,
    find_onsets,
    headroom_step,
    length_stop_reason,
    stop_reason,
)
from servesweep.results.verification import AttemptRun, AttemptSizing
from servesweep.sweep.headroom_run import HeadroomRun, VerifiedRun
from servesweep.sweep.kv_tail import length_scale_at_rate, scaled, simulate, upper_95_per_10k
from servesweep.sweep.observation import Observation

SLO_TTFT = SLO(ttft_ms=1000)


def step(factor, ttft=100.0, kv=0.5, pre=0, failed=0, rate=10.0):
    obs = Observation(output_tok_s=1.0, request_rate=rate * factor, ttft_ms=ttft, kv_peak_frac=kv, preemptions=pre,
                      failed=failed)
    return headroom_step(obs, factor, rate * factor, SLO_TTFT, None, 100, None)


def test_each_onset_is_the_first_step_that_shows_it_with_its_bracket():
    steps = [step(1.0), step(1.5, ttft=1500.0), step(2.0, ttft=2500.0, kv=0.97), step(3.0, ttft=4000, kv=1.0, pre=3)]
    onsets = {o.kind: o for o in find_onsets(steps, 10.0, SLO_TTFT)}
    slo = onsets["slo"]
    assert slo.status == "reached" and slo.offered_rate == 15.0 and slo.pct_above_recommended == pytest.approx(50.0)
    assert slo.interval == [10.0, 15.0] and "ttft_ms p99 1500.0 > 1000" in slo.basis
    assert onsets["kv_full"].offered_rate == 20.0 and onsets["kv_full"].pct_above_recommended == pytest.approx(100.0)
    assert onsets["preemption"].offered_rate == 30.0 and onsets["preemption"].interval == [20.0, 30.0]
    failure = onsets["failure"]
    assert failure.status == "not_reached" and failure.up_to_rate == 30.0 and failure.up_to_pct == pytest.approx(200.0)
    assert stop_reason(steps, [1.0, 1.5, 2.0, 3.0]) == "the cap: 3x the recommended load"


def test_an_onset_at_the_first_step_has_no_bracket_and_unmeasured_figures_say_so():
    steps = [step(1.0, ttft=1200.0, kv=None, pre=None)]
    onsets = {o.kind: o for o in find_onsets(steps, 10.0, SLO_TTFT)}
    assert onsets["slo"].status == "reached" and onsets["slo"].interval is None
    assert onsets["slo"].pct_above_recommended == pytest.approx(0.0)
    assert onsets["preemption"].status == "not_measured" and onsets["kv_full"].status == "not_measured"
    assert {o.status for o in find_onsets(steps, 10.0, None) if o.kind == "slo"} == {"not_measured"}


def test_the_search_stops_at_the_first_failure_or_when_every_onset_was_seen():
    factors = [1.0, 2.0, 3.0]
    assert stop_reason([step(1.0)], factors) is None
    assert stop_reason([step(1.0), step(2.0, failed=1)], factors) == "the first failed request"
    seen_all = [step(1.0, ttft=2000.0, kv=0.99, pre=1, failed=1)]
    assert stop_reason(seen_all, factors) in ("the first failed request", "every onset seen")
    assert stop_reason([step(1.0, ttft=2000.0, kv=0.99, pre=1)], factors) is None  # failure still to come


def test_device_memory_is_the_nvml_peak_against_the_total_or_not_measured():
    s = step(1.0).model_copy(update={"device_mem_peak_bytes": 60.0, "device_mem_total_bytes": 80.0})
    d = device_memory([step(1.0), s])
    assert d.status == "measured" and d.margin_pct == pytest.approx(25.0)
    assert device_memory([step(1.0)]).status == "not_measured"


def test_fixed_lengths_give_the_exact_occupancy_and_no_preemption_above_it():
    # 4 slots, 100-token prompts, 20 output tokens, 16-token blocks: a request holds 7 blocks
    # (101-112 tokens) then 8 (113-120); 4 slots hold at most 32 blocks, at least 28.
    occ = simulate(LengthSpec.parse(100), LengthSpec.parse(20), 4, 16, requests=4000, seed=1)
    assert occ.blocks.max() <= 32 and occ.blocks.min() >= 28
    assert occ.preemptions_per_10k(32) == 0.0 and occ.preemptions_per_10k(1000) == 0.0
    assert occ.preemptions_per_10k(29) > 0  # the pool crossed by the load's normal swing
    assert occ.blocks_for_rate(0.0) == int(occ.blocks.max())
    # Mean KV tokens per request: 12 of 20 steps at 7 blocks, 8 at 8 blocks.
    assert occ.tokens_per_request() == pytest.approx((12 * 7 + 8 * 8) / 20 * 16, rel=0.02)
    assert abs(occ.requests - 4000) < 40


def test_a_longer_tail_needs_a_bigger_pool_for_the_same_rate():
    short = simulate(LengthSpec.parse("lognormal:200:0.2"), LengthSpec.parse(50), 16, 16, requests=20000)
    long = simulate(LengthSpec.parse("lognormal:200:0.8"), LengthSpec.parse(50), 16, 16, requests=20000)
    assert long.blocks_for_rate(1.0) > short.blocks_for_rate(1.0)
    # Holding a prompt for a while before decoding raises the time-weighted share of prompt tokens.
    held = simulate(LengthSpec.parse("lognormal:200:0.2"), LengthSpec.parse(50), 16, 16, prefill_steps=10,
                    requests=20000)
    assert held.tokens_per_request() < short.tokens_per_request()
    assert upper_95_per_10k(3000) == pytest.approx(10.0) and upper_95_per_10k(0) is None


def test_length_headroom_is_the_factor_at_which_the_pool_starts_to_preempt():
    # 4 slots of 100 + 20 fixed tokens peak at exactly 32 blocks: 32 blocks hold them, but requests
    # a few % longer need a ninth block each at the end, and then the 4 staggered slots overrun 32.
    k = length_scale_at_rate(LengthSpec.parse(100), LengthSpec.parse(20), 4, 16, 0, 32, 1.0, requests=4000)
    assert k is not None and 1.0 < k < 1.2
    assert length_scale_at_rate(LengthSpec.parse(100), LengthSpec.parse(20), 4, 16, 0, 10_000, 1.0,
                                requests=4000) is None  # never within 8x
    assert scaled(LengthSpec.parse("lognormal:100:0.5"), 2.0).a == 200 and scaled(LengthSpec.parse("lognormal:100:0.5"), 2.0).b == 0.5
    assert (scaled(LengthSpec.parse("uniform:10:20"), 2.0).a, scaled(LengthSpec.parse("uniform:10:20"), 2.0).b) == (20, 40)


def test_headroom_spec_takes_a_switch_and_refuses_unordered_factors():
    assert HeadroomSpec.model_validate(False).enabled is False
    with pytest.raises(ValueError, match="increasing"):
        HeadroomSpec(factors=[2.0, 1.0])
    with pytest.raises(ValueError, match="above 1"):
        HeadroomSpec(length_factors=[1.0, 2.0])
    assert HeadroomSpec(length_factors=[]).length_factors == []


def length_step(length, kv=0.5, pre=0, failed=0):
    s = step(1.0, kv=kv, pre=pre, failed=failed)
    s.length_factor = length
    return s


def test_length_onsets_are_length_factors_with_their_bracket_and_the_search_stops_at_a_preemption():
    steps = [length_step(1.5, kv=0.7), length_step(2.0, kv=0.97), length_step(3.0, kv=1.0, pre=4)]
    assert length_stop_reason(steps[:1], [1.5, 2.0, 3.0, 4.0]) is None
    assert length_stop_reason(steps, [1.5, 2.0, 3.0, 4.0]) == "the first preemption"
    assert length_stop_reason(steps[:2], [1.5, 2.0]) == "the cap: requests 2x as long"
    onsets = {o.kind: o for o in find_length_onsets(steps)}
    assert (onsets["kv_full"].length_factor, onsets["kv_full"].interval) == (2.0, [1.5, 2.0])
    assert (onsets["preemption"].length_factor, onsets["preemption"].interval) == (3.0, [2.0, 3.0])
    assert onsets["failure"].status == "not_reached" and onsets["failure"].up_to_factor == 3.0
    first = {o.kind: o for o in find_length_onsets([length_step(1.25, pre=1)])}
    assert first["preemption"].interval == [1.0, 1.25]  # 1x: the load search's step at the recommended rate
    assert length_stop_reason([length_step(1.25, failed=1)], [1.25, 2.0]) == "the first failed request"


SCENARIO = """
name: headroom-test
model: /nonexistent
max_model_len: 1024
workload: {input_len: "uniform:64:192", output_len: 48}
load: {concurrency: [8], num_requests: 48}
slo: {ttft_ms: 1000}
headroom: {factors: [1.0, 2.0, 3.0], length_factors: [1.5, 2.0, 3.0], window_s: 5}
"""


def verified_dir(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    traffic = out / "verification" / "attempt-1" / "traffic"
    traffic.mkdir(parents=True)
    (traffic / "summary.json").write_text(json.dumps({
        "completed": 3000, "ttft_ms": {"mean": 40.0}, "tpot_ms": {"mean": 10.0},
        "telemetry": {"kv_pool_tokens": 3200}, "server": {"startup_s": 30.0}}))
    # Half the usable pool (199 of 200 blocks: vLLM's null block) with 8 running, then 4 at a third.
    (traffic / "telemetry.jsonl").write_text("\n".join(json.dumps(s) for s in (
        {"t": 0, "running": 8, "kv_usage": 0.5}, {"t": 1, "running": 4, "kv_usage": 1 / 3},
        {"t": 2, "running": 1, "kv_usage": 0.9})))
    run = VerifiedRun(config="bf16", level="c8", attempt_dir=out / "verification" / "attempt-1",
                      sizing=AttemptSizing.model_validate({
                          "kv_cache_memory_bytes": 200 * 16 * 1000, "kv_blocks": 200, "max_num_seqs": 8,
                          "inputs": {"block_size": 16}, "target_source": "stress run's expected peak"}),
                      traffic=AttemptRun(request_rate=10.0, preemptions=0), concurrency=8)
    return load_scenario(path), out, run


class CannedSteps(HeadroomRun):
    def __init__(self, scenario, out, results):
        super().__init__(scenario, out, Console(quiet=True))
        self.results = list(results)
        self.factors_run = []

    def _step(self, server, factor, rate, length_factor=1.0):
        self.factors_run.append(factor if length_factor == 1.0 else f"len{length_factor:g}")
        return self.results.pop(0), {}, 100, f"headroom/x{factor:g}-len{length_factor:g}"


def obs(ttft, kv=0.5, pre=0, failed=0):
    return Observation(output_tok_s=1.0, request_rate=9.0, ttft_ms=ttft, kv_peak_frac=kv, preemptions=pre,
                       failed=failed)


def test_the_search_records_every_step_and_its_tail_and_resumes_after_a_deadline(tmp_path):
    scenario, out, run = verified_dir(tmp_path)
    first = CannedSteps(scenario, out, [obs(200.0)])
    # Each step needs its window x factor + 15 s: 20 s for x1, 25 s for x2; 22 s left stops before x2.
    with pytest.raises(SweepInterrupted):
        first.measure(None, run, deadline=__import__("time").monotonic() + 22.0)
    stored = read_headroom(out / "headroom.json")
    assert stored.finished is False and [s.factor for s in stored.steps] == [1.0]
    # A run cut here still says what its steps showed: the onsets so far are in the file.
    assert {o.kind: o.status for o in stored.onsets}["slo"] == "not_reached" and stored.stop_reason is None
    second = CannedSteps(scenario, out, [obs(1500.0, kv=0.96), obs(3000.0, kv=1.0, pre=2),
                                         obs(200.0, kv=0.8), obs(200.0, kv=1.0, pre=3)])
    h = second.measure(None, run)
    assert second.factors_run == [2.0, 3.0, "len1.5", "len2"] and h.finished
    assert h.stop_reason == "the cap: 3x the recommended load" and h.length_stop_reason == "the first preemption"
    assert [(s.length_factor, s.offered_rate) for s in h.length_steps] == [(1.5, 10.0), (2.0, 10.0)]
    length = {o.kind: o for o in h.length_onsets}
    assert length["preemption"].interval == [1.5, 2.0] and length["kv_full"].length_factor == 2.0
    onsets = {o.kind: o for o in h.onsets}
    assert onsets["slo"].offered_rate == 20.0 and onsets["kv_full"].offered_rate == 20.0
    assert onsets["preemption"].offered_rate == 30.0 and onsets["failure"].status == "not_reached"
    t = h.tail
    assert t.status == "measured" and t.prefill_steps == 4 and t.pool_blocks == 199 and t.measured_requests == 3000
    assert t.measured_kv_tokens_per_request == pytest.approx((0.5 * 3184 / 8 + 3184 / 3 / 4) / 2, rel=1e-6)
    assert t.measured_upper_95_per_10k == pytest.approx(10.0)
    target = t.sizings[1]
    assert target.kv_blocks < 200 and target.kv_bytes == target.kv_blocks * 16 * 1000
    assert t.sizings[0].kv_blocks == 200  # the verified pool as allocated, its null block included
    assert target.predicted_preemptions_per_10k <= 1.0
    assert h.device_memory.status == "not_measured"
    assert t.batch_cap_bound_frac == pytest.approx(8 * 15 / 199)  # 8 x (192 + 48 tokens = 15 blocks) of 199


def test_the_recommendation_carries_the_headroom_of_its_own_point_only(tmp_path):
    scenario, out, run = verified_dir(tmp_path)
    h = CannedSteps(scenario, out, [obs(200.0), obs(1500.0), obs(3000.0, failed=1),
                                    obs(200.0, kv=0.7), obs(200.0, kv=0.8), obs(200.0, kv=0.9)]).measure(None, run)
    assert h.stop_reason == "the first failed request"
    assert h.length_stop_reason == "the cap: requests 3x as long"
    rec = ProductionRecommendation(precision="bf16", based_on={"config": "bf16", "level": "c8"}, oom_margin_pct=24.5,
                                   oom_margin_sized_for_pct=22.5)
    apply_headroom(rec, h)
    lines = headroom_lines(rec)
    assert any(line.startswith("SLO breached: at 20 req/s offered, +100 %") for line in lines)
    assert any(line.startswith("first failed request: at 30 req/s") for line in lines)
    assert any("first preemption: not reached up to 30 req/s (+200 %)" in line for line in lines)
    assert any("sized for 22.5 %" in line for line in lines)
    assert any(line.startswith("No offered load can preempt with these lengths: max_num_seqs x the longest request "
                               "holds at most 60 % of the pool") for line in lines)
    assert "SLO breached" in console_line(rec)
    assert any(line.startswith("longer requests, first preemption: not reached with requests up to 3x as long")
               for line in lines)
    assert "longer requests, first preemption: not reached" in console_line(rec)
    other = ProductionRecommendation(precision="fp8", based_on={"config": "fp8", "level": "c8"})
    apply_headroom(other, h)
    assert other.headroom.skipped.startswith("headroom.json is of bf16")


def test_a_cut_run_is_reported_as_not_finished_with_the_onsets_of_its_steps(tmp_path):
    # examples/h200-2026-12-07: the SLO broke at the first step (x1), the run was cut before its last
    # length step: the report says so instead of "stopped at None".
    scenario, out, run = verified_dir(tmp_path)
    with pytest.raises(SweepInterrupted):
        CannedSteps(scenario, out, [obs(4800.0)]).measure(None, run, deadline=__import__("time").monotonic() + 22.0)
    rec = ProductionRecommendation(precision="bf16", based_on={"config": "bf16", "level": "c8"})
    apply_headroom(rec, read_headroom(out / "headroom.json"))
    lines = headroom_lines(rec)
    assert lines[0].startswith("Headroom NOT FINISHED") and "None" not in " ".join(lines)
    assert any(line.startswith("SLO breached: at 10 req/s offered, +0 % vs the recommended load (already at the first "
                               "step: no headroom above the recommended load)") for line in lines)
    assert "already at the first step" in console_line(rec)


def test_no_length_search_when_the_recommended_load_already_preempts(tmp_path):
    scenario, out, run = verified_dir(tmp_path)
    runner = CannedSteps(scenario, out, [obs(200.0, pre=1), obs(1500.0), obs(3000.0)])
    h = runner.measure(None, run)
    assert h.length_steps == [] and h.length_stop_reason.startswith("not run: the pool preempted at the recommended")
    assert all(not isinstance(f, str) for f in runner.factors_run)


def test_a_fresh_servers_first_step_is_warmed_up_and_no_other(tmp_path):
    scenario, out, run = verified_dir(tmp_path)
    runner = HeadroomRun(scenario, out, Console(quiet=True))
    runner.warmup_requests = 16  # what standalone() sets for a server launched for the headroom alone
    first, second = runner._level(1.0, 10.0), runner._level(2.0, 10.0, length_factor=1.5)
    assert (first.warmup_requests, second.warmup_requests) == (16, 0)
    assert (first.name, second.name) == ("headroom-x1", "headroom-length-x1.5")
