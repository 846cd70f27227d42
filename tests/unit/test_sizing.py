"""KV sizing to the OOM-margin band, with hand-computed numbers (see sweep/sizing.py's worked example)."""

import math

import orjson
import pytest

from servesweep.sweep.sizing import SizingInputs, Sizing, TARGET_PEAK_FRAC, size_kv, step_back

GIB = 1024**3
PER_TOKEN = 131072  # 32 layers x 2 x 8 KV heads x 128 dims x 2 bytes
BLOCK = 16 * PER_TOKEN  # 2 MiB


def gpu_inputs(**kw) -> SizingInputs:
    base = dict(concurrency=48, kv_peak_bytes=7.75 * GIB, bytes_per_token=PER_TOKEN, block_size=16,
                max_model_len=8192, device_total_bytes=80 * GIB, non_kv_bytes=20 * GIB, max_num_seqs=256)
    base.update(kw)
    return SizingInputs(**base)


def test_target_is_the_middle_of_the_band():
    assert TARGET_PEAK_FRAC == pytest.approx(0.775)


def test_worked_example():
    s = size_kv(gpu_inputs())
    assert s.kv_cache_memory_bytes == 10 * GIB == 10737418240
    assert s.kv_blocks == 5120
    assert s.floor_bytes == 1 * GIB and s.floor_binds is False
    assert s.memory_fraction == 0.375 and s.fits_device is True
    assert s.non_kv_source.startswith("measured")
    assert s.max_num_seqs == 48
    assert s.expected_peak_frac == pytest.approx(0.775)
    assert s.expected_margin_pct == pytest.approx(22.5)
    assert s.server_args() == ["--kv-cache-memory-bytes", "10737418240", "--max-num-seqs", "48"]


def test_budget_is_rounded_up_to_whole_blocks():
    # 1 GiB peak / 0.775 = 1385473321.3 bytes = 660.6 blocks of 2 MiB -> 661 blocks.
    s = size_kv(gpu_inputs(kv_peak_bytes=1 * GIB))
    assert s.kv_blocks == 661 and s.kv_cache_memory_bytes == 661 * BLOCK
    assert s.expected_peak_frac == pytest.approx(GIB / (661 * BLOCK))  # 0.7746: rounding only adds margin


def test_floor_binds_for_a_long_max_model_len():
    # One 131072-token request needs 131072 x 128 KiB = 16 GiB, more than the 10 GiB the load needs.
    s = size_kv(gpu_inputs(max_model_len=131072))
    assert s.floor_bytes == 16 * GIB and s.floor_binds is True
    assert s.kv_cache_memory_bytes == 16 * GIB and s.kv_blocks == 8192
    assert s.expected_margin_pct == pytest.approx((1 - 7.75 / 16) * 100)  # 51.56 %
    assert any("floor binds" in n for n in s.notes)
    assert any("above the 40 % band edge" in n for n in s.notes)
    assert s.memory_fraction == 0.45  # (20 + 16) / 80


def test_cpu_sizing_from_pool_usage_fraction():
    # Pool 4 GiB for 32768 tokens -> 131072 bytes/token. Peak 31 % of the pool = 1.24 GiB;
    # / 0.775 = 1.6 GiB = 819.2 blocks -> 820 blocks = 1719664640 bytes.
    s = size_kv(SizingInputs(concurrency=4, kv_peak_frac=0.31, pool_bytes=4 * GIB, pool_tokens=32768,
                             block_size=16, max_model_len=2048))
    assert s.kv_blocks == 820 and s.kv_cache_memory_bytes == 1719664640
    assert s.memory_fraction is None and s.fits_device is None and s.non_kv_bytes is None
    assert s.floor_bytes == 2048 * PER_TOKEN and s.floor_binds is False
    assert s.expected_peak_frac == pytest.approx(1.24 * 1024 / 1640)  # 0.7742
    assert s.max_num_seqs == 4


def test_without_block_size_the_budget_is_whole_bytes():
    s = size_kv(SizingInputs(concurrency=2, kv_peak_bytes=775.0))
    assert s.kv_cache_memory_bytes == 1000 and s.kv_blocks is None
    assert s.floor_bytes is None and s.floor_binds is None
    assert any("floor was not checked" in n for n in s.notes)


def test_non_kv_from_vllm_accounting_when_not_measured():
    # 0.9 x 80 GiB - 50 GiB pool = 22 GiB non-KV; (22 + 10) / 80 = 0.4.
    s = size_kv(gpu_inputs(non_kv_bytes=None, pool_bytes=50 * GIB, gpu_memory_utilization=0.9))
    assert s.non_kv_bytes == pytest.approx(22 * GIB) and s.non_kv_source.startswith("vLLM accounting")
    assert s.memory_fraction == 0.4
    unset = size_kv(gpu_inputs(non_kv_bytes=None, pool_bytes=50 * GIB))
    assert unset.memory_fraction == 0.4 and any("default 0.9 assumed" in n for n in unset.notes)


def test_run_cap_below_the_concurrency_is_kept():
    s = size_kv(gpu_inputs(concurrency=48, max_num_seqs=32))
    assert s.max_num_seqs == 32 and any("kept at the run's 32" in n for n in s.notes)


def test_missing_kv_peak_is_an_error():
    with pytest.raises(ValueError, match="no measured KV peak"):
        size_kv(SizingInputs(concurrency=4, kv_peak_frac=0.5))


def test_step_back_adds_a_quarter_of_kv_budget():
    first = step_back(size_kv(gpu_inputs()))
    # 10 GiB x 1.25 = 12.5 GiB = 6400 blocks; (20 + 12.5) / 80 = 0.40625 -> 0.407.
    assert first.step == 1 and first.kv_cache_memory_bytes == 12.5 * GIB and first.kv_blocks == 6400
    assert first.memory_fraction == 0.407
    assert first.max_num_seqs == 48
    assert first.expected_margin_pct == pytest.approx(38.0)
    second = step_back(first)
    # 12.5 GiB x 1.25 = 15.625 GiB = 8000 blocks.
    assert second.step == 2 and second.kv_cache_memory_bytes == 8000 * BLOCK
    with pytest.raises(ValueError, match="at most 2"):
        step_back(second)


def test_step_back_lowers_max_num_seqs_when_more_kv_would_not_fit():
    # 16 GiB device, 4 GiB non-KV: 10 GiB fits (0.875); 12.5 GiB needs 16.5 GiB (1.031): does not.
    s = size_kv(gpu_inputs(device_total_bytes=16 * GIB, non_kv_bytes=4 * GIB))
    assert s.memory_fraction == 0.875 and s.fits_device
    back = step_back(s)
    assert back.kv_cache_memory_bytes == 10 * GIB
    assert back.max_num_seqs == 38  # 48 x 10 / 12.5 = 38.4: in proportion to the budget that would be needed
    assert back.change == "max_num_seqs 48 -> 38" and back.fits_device


def test_sizing_round_trips_as_json():
    s = size_kv(gpu_inputs())
    data = orjson.loads(orjson.dumps(s.to_dict()))
    assert data["kv_cache_memory_bytes"] == 10 * GIB and data["inputs"]["concurrency"] == 48
    assert data["server_args"][1] == str(10 * GIB)
    assert Sizing.model_validate(s.model_dump()).kv_cache_memory_bytes == 10 * GIB


# The stress run's peak: 32 requests of 1824 tokens (p99 prompt 1638 + p99 output 186, i.e. 114
# whole blocks of 16) x 131072 bytes = 7.125 GiB; / 0.775 = 9.1935 GiB = 4707.1 blocks -> 4708.
STRESS_TOKENS = 1638 + 186


def stress_inputs(**kw) -> SizingInputs:
    return gpu_inputs(**{"concurrency": 32, "kv_peak_bytes": 3 * GIB, "max_model_len": 4096,
                         "device_total_bytes": 141 * GIB, "non_kv_bytes": 30 * GIB,
                         "stress_request_tokens": STRESS_TOKENS, **kw})


def test_budget_targets_the_stress_runs_peak_not_the_traffic_one():
    s = size_kv(stress_inputs())
    assert s.stress_peak_bytes == 32 * STRESS_TOKENS * PER_TOKEN == 7.125 * GIB
    assert s.target_peak_bytes == s.stress_peak_bytes and s.target_source.startswith("stress run")
    assert s.kv_blocks == 4708 and s.kv_cache_memory_bytes == 4708 * BLOCK
    assert s.expected_margin_pct == pytest.approx((1 - 7.125 * GIB / (4708 * BLOCK)) * 100)  # 22.51 %
    # The traffic peak alone (the old rule) would have given 3 / 0.775 = 3.87 GiB: 2.4x too little,
    # the shortfall the H200 run of 2026-12-02 met (issue 23).
    assert size_kv(stress_inputs(stress_request_tokens=None)).kv_cache_memory_bytes < s.kv_cache_memory_bytes / 2.3


def test_a_measured_peak_above_the_stress_estimate_wins():
    s = size_kv(stress_inputs(kv_peak_bytes=8 * GIB))
    assert s.target_peak_bytes == 8 * GIB and s.target_source.startswith("measured")


def obs(frac, preemptions=0, running_peak=None):
    from servesweep.sweep.observation import Observation

    return Observation(output_tok_s=1.0, kv_peak_frac=frac, preemptions=preemptions, running_batch_peak=running_peak)


def test_step_back_from_the_measured_overshoot_of_a_preempting_stress_run():
    s = size_kv(stress_inputs())
    # The pool held only 16 of the 32 requests the batch wanted to run: it needs twice the budget.
    back = step_back(s, obs(0.40), obs(1.0, preemptions=125, running_peak=16))
    assert back.target_peak_bytes == pytest.approx(2 * s.kv_cache_memory_bytes)
    assert back.kv_cache_memory_bytes == math.ceil(2 * 4708 / 0.775) * BLOCK
    assert "16 of 32 running" in back.change and back.step == 1


def test_step_back_shrinks_a_budget_whose_stress_margin_was_too_loose():
    s = size_kv(stress_inputs())
    back = step_back(s, obs(0.30), obs(0.50))  # 50 % margin measured under stress: above the band
    assert back.target_peak_bytes == pytest.approx(0.5 * s.kv_cache_memory_bytes)
    assert back.kv_cache_memory_bytes < s.kv_cache_memory_bytes
    assert back.expected_margin_pct == pytest.approx(22.5, abs=0.1)


def test_step_back_without_a_measured_overshoot_says_so():
    s = size_kv(stress_inputs())
    back = step_back(s, obs(0.40), obs(0.99, preemptions=3, running_peak=32))  # the batch ran full anyway
    assert back.target_peak_bytes == pytest.approx(1.25 * s.kv_cache_memory_bytes)
    assert "no measured overshoot" in back.change
