"""The verification plan (traffic + stress runs) and its pass/fail judgement."""

from pathlib import Path

import numpy as np
import orjson
import pytest

from servesweep.errors import ConfigError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.lengths import LengthSpec
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workload import Workload
from servesweep.sweep.observation import Observation
from servesweep.sweep.sizing import SizingInputs, size_kv
from servesweep.results.verification import Verification
from servesweep.sweep.verify_plan import add_attempt, judge, length_quantile, plan_verification


# --- p99 of the length distributions ------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("128", 128),
    ("uniform:64:192", 191),  # 129 equally likely values: 64 + ceil(0.99 x 129) - 1
    ("uniform:5:5", 5),
    ("normal:100:10", 123),  # 100 + 2.3263 x 10 = 123.26
    ("lognormal:300:0.8", 1929),  # 300 x exp(2.3263 x 0.8) = 1929.4
])
def test_p99_by_hand(text, want):
    assert length_quantile(LengthSpec.parse(text)) == want


@pytest.mark.parametrize("text", ["uniform:64:192", "normal:100:10", "lognormal:300:0.8", "normal:10:20"])
def test_p99_matches_the_sampler(text):
    spec = LengthSpec.parse(text)
    drawn = spec.sample(np.random.default_rng(7), 200_000)
    sampled = float(np.quantile(drawn, 0.99, method="inverted_cdf"))
    assert length_quantile(spec) == pytest.approx(sampled, rel=0.02)


def test_quantile_respects_the_samplers_clipping():
    # normal:10:20 at q=0.01 is 10 - 46.5 < 1: the sampler clips to 1.
    assert length_quantile(LengthSpec.parse("normal:10:20"), 0.01) == 1
    # lognormal:100:1 is clipped at 100 x e^4 = 5460; its 0.99999 quantile (100 x e^4.26) is above that.
    assert length_quantile(LengthSpec.parse("lognormal:100:1"), 0.99999) == 5460


# --- the plan ----------------------------------------------------------------------------------

WORKLOAD = Workload(input_len="uniform:64:192", output_len="lognormal:300:0.8", ignore_eos=False, seed=3)


def test_plan_for_a_request_count_window():
    level = LoadLevel(concurrency=16, num_requests=64, warmup_requests=4)
    plan = plan_verification(WORKLOAD, 16, 7.5, level)
    t, s = plan.traffic, plan.stress
    assert t.level.concurrency == 16 and t.level.num_requests == 192 and t.level.warmup_requests == 4
    assert t.workload == WORKLOAD
    assert s.level.request_rate == 7.5 and s.level.arrival == "gamma" and s.level.burstiness == 0.5
    assert s.level.max_concurrency == 32 and s.level.num_requests == 192 and s.level.warmup_requests == 4
    assert str(s.workload.input_len) == "191" and str(s.workload.output_len) == "1929"
    assert s.workload.ignore_eos is True and s.workload.seed == 3
    assert (plan.input_len_p99, plan.output_len_p99) == (191, 1929)
    data = orjson.loads(orjson.dumps(plan.to_dict()))
    assert data["stress"]["workload"]["input_len"] == "191"
    assert data["stress"]["level"]["arrival"] == "gamma"


def test_plan_for_a_duration_window_and_other_factors():
    level = LoadLevel(concurrency=8, duration_s=30.0)
    plan = plan_verification(WORKLOAD, 8, 2.0, level, window_factor=2, in_flight_factor=3)
    assert plan.traffic.level.duration_s == 60.0 and plan.traffic.level.num_requests is None
    assert plan.stress.level.duration_s == 60.0 and plan.stress.level.max_concurrency == 24


def test_dataset_workload_needs_measured_lengths():
    wl = Workload(dataset=Path("prompts.jsonl"))
    level = LoadLevel(concurrency=4, num_requests=10)
    with pytest.raises(ConfigError, match="p99 prompt and output lengths"):
        plan_verification(wl, 4, 1.0, level)
    plan = plan_verification(wl, 4, 1.0, level, dataset_lengths=(900, 400))
    assert plan.stress.workload.dataset is None and str(plan.stress.workload.input_len) == "900"
    assert plan.traffic.workload.dataset == Path("prompts.jsonl")


def test_p99_request_must_fit_max_model_len():
    level = LoadLevel(concurrency=4, num_requests=10)
    with pytest.raises(ConfigError, match=r"191 prompt \+ 1929 output tokens\) does not fit max_model_len 2048"):
        plan_verification(WORKLOAD, 4, 1.0, level, max_model_len=2048)
    assert plan_verification(WORKLOAD, 4, 1.0, level, max_model_len=2120).stress.level.max_concurrency == 8


def test_plan_rejects_a_missing_rate():
    with pytest.raises(ValueError, match="request rate"):
        plan_verification(WORKLOAD, 4, 0.0, LoadLevel(concurrency=4, num_requests=10))


# --- the judgement -----------------------------------------------------------------------------

SLO_ = SLO(ttft_ms=500.0, tpot_ms=50.0)


def run(**kw) -> Observation:
    base = dict(output_tok_s=1000.0, ttft_ms=200.0, tpot_ms=20.0, e2e_ms=3000.0, failed=0, preemptions=0,
                kv_peak_frac=0.75)
    base.update(kw)
    return Observation(**base)


def test_clean_runs_pass():
    j = judge(run(), run(kv_peak_frac=0.9), SLO_)
    assert j.passed and j.reasons == []
    assert {(c.run, c.check) for c in j.checks} == {
        ("traffic", "failures"), ("traffic", "preemptions"), ("traffic", "margin"), ("traffic", "slo"),
        ("stress", "failures"), ("stress", "preemptions"), ("stress", "margin")}


def test_slo_is_judged_on_the_traffic_run_only():
    assert judge(run(), run(ttft_ms=9000.0, tpot_ms=400.0), SLO_).passed
    j = judge(run(ttft_ms=600.0), run(), SLO_)
    assert not j.passed and j.reasons == ["traffic: ttft_ms p99 600.0 > 500"]


def test_band_edges():
    # Stress: margin within 5-40 %. 3 % is too tight, 45 % means memory the stress never touched.
    assert judge(run(), run(kv_peak_frac=0.97), SLO_).reasons == ["stress: OOM margin 3.0 % (want 5-40 %)"]
    assert judge(run(), run(kv_peak_frac=0.55), SLO_).reasons == ["stress: OOM margin 45.0 % (want 5-40 %)"]
    assert judge(run(), run(kv_peak_frac=0.95), SLO_).passed  # exactly 5 % margin is in band
    # Traffic: only the lower edge; a loose traffic margin is what room for p99 requests looks like.
    assert judge(run(kv_peak_frac=0.5), run(), SLO_).passed
    assert not judge(run(kv_peak_frac=0.96), run(), SLO_).passed


def test_preemptions_and_failures_fail_either_run():
    j = judge(run(), run(preemptions=2, kv_peak_frac=0.6), SLO_)
    assert j.reasons == ["stress: 2 preemption(s)", "stress: OOM margin 0.0 % (want 5-40 %)"]
    j = judge(run(failed=1), run(failed=4), None)
    assert j.reasons == ["traffic: 1 failed request(s)", "stress: 4 failed request(s)"]


def test_unmeasured_memory_fails():
    j = judge(run(kv_peak_frac=None, preemptions=None), run(), None)
    assert j.reasons == ["traffic: preemptions not measured", "traffic: OOM margin not measured (no KV telemetry)"]


def test_verification_result_records_attempts():
    sizing = size_kv(SizingInputs(concurrency=8, kv_peak_bytes=775.0))
    v = Verification(command=["vllm", "serve", "m", "--kv-cache-memory-bytes", "1000"])
    add_attempt(v, sizing.to_dict(), run(), run(kv_peak_frac=0.99), judge(run(), run(kv_peak_frac=0.99), SLO_))
    assert not v.passed
    add_attempt(v, sizing.to_dict(), run(), run(kv_peak_frac=0.8), judge(run(), run(kv_peak_frac=0.8), SLO_))
    data = orjson.loads(orjson.dumps(v.to_file()))
    assert data["passed"] is True and len(data["attempts"]) == 2
    assert data["attempts"][0]["reasons"] == ["stress: OOM margin 1.0 % (want 5-40 %)"]
    assert data["attempts"][1]["stress"]["oom_margin_pct"] == pytest.approx(20.0)
    assert data["attempts"][0]["sizing"]["kv_cache_memory_bytes"] == 1000
    assert data["command"][0] == "vllm"
