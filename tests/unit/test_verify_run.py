"""The verification driver without a server: `_attempt` replaced by canned observations, so the
resume, the step-back decisions and the deadline are checked on known figures."""

import json

import pytest
from rich.console import Console

from servesweep.results import SweepPoint
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep import SweepInterrupted
from servesweep.analysis.recommend import analyse_sweep
from servesweep.sweep.verify_run import VERIFICATION_FILE, Confirmation
from servesweep.sweep.observation import Observation

from tests_support import GIB, point

SCENARIO = """
name: confirm-test
model: /nonexistent
max_model_len: 4096
workload: {input_len: "lognormal:512:0.5", output_len: "uniform:64:192"}
load: {concurrency: [1, 8], duration_s: 10}
slo: {ttft_ms: 1000}
"""


def sweep_dir(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "scenario.json").write_text(json.dumps(scenario.model_dump(mode="json")))
    pts = [point("bf16", 1, 100), point("bf16", 8, 700)]
    for p in pts:
        p["level_spec"]["duration_s"] = 10
        p["telemetry"].update(device_mem_peak_bytes=40 * GIB, device_mem_total_bytes=80 * GIB, kv_pool_tokens=81920)
        p["server"] = {"startup_s": 100.0, "kv_pool": {"block_size": 16}}
    (out / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pts))
    return scenario, out


def o(frac, preemptions=0, running=None, ttft=100.0):
    return Observation(output_tok_s=1.0, kv_peak_frac=frac, preemptions=preemptions, running_batch_peak=running,
                       ttft_ms=ttft)


class Canned(Confirmation):
    def __init__(self, scenario, out, results, headroom=False):
        super().__init__(scenario, out, Console(quiet=True), headroom=headroom)
        self.results = list(results)
        self.budgets = []

    def _attempt(self, config, traffic, stress, attempt, then=None):
        self.budgets.append(config.kv_cache_memory_bytes)
        t, s = self.results.pop(0)
        if then is not None:
            then("the attempt's server", t, s)
        return t, s, ["vllm", "serve"]


def test_a_preempting_stress_run_steps_from_its_overshoot_and_passes(tmp_path):
    scenario, out = sweep_dir(tmp_path)
    c = Canned(scenario, out, [(o(0.3), o(1.0, preemptions=40, running=4)), (o(0.2), o(0.75))])
    data = c.run(analyse_sweep(out))
    assert data.finished and data.passed and len(data.attempts) == 2
    assert c.budgets[1] > 2 * c.budgets[0]  # 8 wanted to run, the pool held 4: twice the need, sized to the band


def test_a_failure_more_memory_cannot_fix_ends_the_verification(tmp_path):
    scenario, out = sweep_dir(tmp_path)
    c = Canned(scenario, out, [(o(0.3, ttft=5000.0), o(0.75))])  # the SLO broke over the longer window
    data = c.run(analyse_sweep(out))
    assert data.finished and not data.passed and len(data.attempts) == 1
    assert "ttft_ms" in data.reason


def test_resumes_at_the_next_attempt_and_respects_the_deadline(tmp_path, monkeypatch):
    import servesweep.sweep.verify_run as confirm

    scenario, out = sweep_dir(tmp_path)
    first = Canned(scenario, out, [(o(0.3), o(1.0, preemptions=40, running=4))])
    # One attempt takes the measured start (100 s) + two 30 s windows + 60 s slack = 220 s; the
    # first call's second attempt is made to look longer than what is left.
    real, calls = confirm.attempt_seconds, []
    monkeypatch.setattr(confirm, "attempt_seconds", lambda pt, plan: real(pt, plan) if not calls.append(1)
                        and len(calls) == 1 else 1e9)
    with pytest.raises(SweepInterrupted):
        first.run(analyse_sweep(out), time_left_s=1000.0)
    monkeypatch.setattr(confirm, "attempt_seconds", real)
    recommended = SweepPoint.model_validate(point("bf16", 8, 700) | {"server": {"startup_s": 100.0}})
    assert real(recommended, _plan(scenario)) == 220.0
    stored = json.loads((out / VERIFICATION_FILE).read_text())
    assert stored["finished"] is False and len(stored["attempts"]) == 1
    with pytest.raises(SweepInterrupted):
        Canned(scenario, out, []).run(analyse_sweep(out), time_left_s=200.0)  # too little left: nothing started
    second = Canned(scenario, out, [(o(0.2), o(0.75))])
    data = second.run(analyse_sweep(out), time_left_s=1000.0)
    assert data.passed and len(data.attempts) == 2
    assert second.budgets[0] > 2 * first.budgets[0]  # stepped from the stored attempt


def _plan(scenario):
    from servesweep.loadgen.arrivals import LoadLevel
    from servesweep.sweep.verify_plan import plan_verification

    return plan_verification(scenario.workload, 8, 7.0, LoadLevel(concurrency=8, duration_s=10))


def test_no_recommendation_is_recorded_with_its_reason(tmp_path):
    scenario, out = sweep_dir(tmp_path)
    pts = [point("bf16", 1, 100, ttft_p99=5000.0)]
    (out / "points.jsonl").write_text(json.dumps(pts[0]) + "\n")
    data = Canned(scenario, out, []).run(analyse_sweep(out))
    assert data.finished and not data.passed
    assert data.skipped.startswith("no recommendation (no point met the SLOs")


def test_the_traffic_run_takes_the_scenarios_repeats_and_the_stress_run_one_window(tmp_path):
    from types import SimpleNamespace

    from servesweep.loadgen.arrivals import LoadLevel
    from servesweep.sweep.verify_plan import plan_verification

    scenario, out = sweep_dir(tmp_path)
    scenario = scenario.model_copy(update={"load": scenario.load.model_copy(update={"repeats": 3})})
    plan = plan_verification(scenario.workload, 8, 2.0, LoadLevel(concurrency=8, duration_s=10))
    server = SimpleNamespace(base_url="http://127.0.0.1:1", model_name="m", tokenizer_dir=None)
    c = Confirmation(scenario, out, Console(quiet=True))
    assert c.load_config(plan.traffic, server, tmp_path / "t").repeats == 3
    assert c.load_config(plan.stress, server, tmp_path / "s").repeats == 1


def test_an_slo_verdict_whose_interval_straddles_the_limit_is_named_and_judged_on_the_mean():
    from servesweep.loadgen.stats import SLO
    from servesweep.sweep.verify_plan import judge

    traffic = Observation(output_tok_s=1.0, kv_peak_frac=0.5, preemptions=0, ttft_ms=950.0, n=3,
                          ci95={"ttft_ms": (880.0, 1020.0)})
    stress = o(0.75)
    j = judge(traffic, stress, SLO(ttft_ms=1000))
    slo = next(c for c in j.checks if c.check == "slo")
    assert slo.ok and "uncertain" in slo.detail and "mean of 3 repeats" in slo.detail


def test_the_headroom_runs_on_the_passing_attempts_server_only(tmp_path, monkeypatch):
    from servesweep.sweep.headroom_run import HeadroomRun

    calls = []
    monkeypatch.setattr(HeadroomRun, "measure", lambda self, server, run, deadline=None: calls.append((server, run)))
    scenario, out = sweep_dir(tmp_path)
    # The first attempt preempts (no headroom on it); the second passes: measured on its server.
    data = Canned(scenario, out, [(o(0.3), o(1.0, preemptions=40, running=4)), (o(0.2, ttft=120.0), o(0.75))],
                  headroom=True).run(analyse_sweep(out))
    assert data.passed and len(calls) == 1
    server, run = calls[0]
    assert server == "the attempt's server" and run.attempt_dir == out / "verification" / "attempt-2"
    assert run.traffic.ttft_ms == 120.0
    assert run.sizing.kv_cache_memory_bytes == data.attempts[1].sizing.kv_cache_memory_bytes


def test_a_headroom_cut_short_keeps_the_attempt_and_interrupts_after_it(tmp_path, monkeypatch):
    from servesweep.sweep.headroom_run import HeadroomRun

    def cut(self, server, run, deadline=None):
        raise SweepInterrupted()

    monkeypatch.setattr(HeadroomRun, "measure", cut)
    scenario, out = sweep_dir(tmp_path)
    with pytest.raises(SweepInterrupted):
        Canned(scenario, out, [(o(0.2), o(0.75))], headroom=True).run(analyse_sweep(out))
    stored = json.loads((out / VERIFICATION_FILE).read_text())
    assert stored["finished"] is True and stored["passed"] is True and len(stored["attempts"]) == 1
