"""Each backend writes a KV budget in its own knobs, by its own memory rule (servesweep.memory_fraction):
vLLM's gpu_memory_utilization is a fraction of the device, TensorRT-LLM's
free_gpu_memory_fraction a fraction of the memory free after the model loaded."""

import pytest

from servesweep.memory_fraction import exact_fraction, non_kv_from_fraction
from servesweep.analysis.selection import apply_verification
from servesweep.results.recommendation import ProductionRecommendation
from servesweep.results.verification import Verification
from servesweep.results import memory_fraction_of
from servesweep.results.summary import ServerRecord
from servesweep.sweep.sizing import SizingInputs, size_kv

GIB = 1024**3
PER_TOKEN = 131072


def inputs(kind: str, **kw) -> SizingInputs:
    # sweep/sizing.py's worked example: a 10 GiB budget, 20 GiB non-KV on an 80 GiB device.
    base = dict(kind=kind, concurrency=48, kv_peak_bytes=7.75 * GIB, bytes_per_token=PER_TOKEN, block_size=16,
                max_model_len=8192, device_total_bytes=80 * GIB, non_kv_bytes=20 * GIB)
    return SizingInputs(**{**base, **kw})


def test_vllm_sizing_names_vllms_knobs():
    s = size_kv(inputs("vllm"))
    assert s.knobs == {"max_num_seqs": 48, "kv_cache_memory_bytes": 10 * GIB, "gpu_memory_utilization": 0.375}
    assert s.server_args() == ["--kv-cache-memory-bytes", str(10 * GIB), "--max-num-seqs", "48"]


def test_trtllm_sizing_names_trtllms_knobs_by_the_free_memory_rule():
    s = size_kv(inputs("trtllm"))
    # 10 GiB of the 60 GiB free after loading (not (20 + 10) / 80 = 0.375, vLLM's rule).
    assert s.memory_fraction == 0.167 and s.memory_fraction_of == "free" and s.fits_device
    assert s.knobs == {"max_batch_size": 48, "kv_cache_config.max_tokens": 10 * GIB // PER_TOKEN,
                       "kv_cache_free_gpu_memory_fraction": 0.167}
    assert s.server_args() == ["--max_batch_size", "48", "--kv_cache_free_gpu_memory_fraction", "0.167"]
    # The relaunch sets the budget's fraction too: TensorRT-LLM takes the smaller of the two pools.
    assert s.config_update == {"kv_cache_memory_bytes": 10 * GIB, "max_batch_size": 48, "memory_fraction": 0.167}
    assert size_kv(inputs("vllm")).config_update == {"kv_cache_memory_bytes": 10 * GIB, "max_batch_size": 48}


def test_the_runs_fraction_is_read_by_the_servers_own_rule():
    # No device peak: non-KV comes from the fraction the run used and the pool it got.
    # vLLM: 0.5 x 80 - 30 = 10 GiB non-KV; TensorRT-LLM: the pool is 0.5 of free, so 60 GiB free, 20 non-KV.
    vllm = size_kv(inputs("vllm", non_kv_bytes=None, pool_bytes=30 * GIB, memory_fraction=0.5))
    trt = size_kv(inputs("trtllm", non_kv_bytes=None, pool_bytes=30 * GIB, memory_fraction=0.5))
    assert vllm.non_kv_bytes == pytest.approx(10 * GIB) and vllm.memory_fraction == 0.25
    assert trt.non_kv_bytes == pytest.approx(20 * GIB) and trt.memory_fraction == 0.167
    assert trt.non_kv_source.startswith("TensorRT-LLM accounting")


def test_a_too_large_budget_does_not_fit_the_free_memory():
    s = size_kv(inputs("trtllm", non_kv_bytes=75 * GIB))
    assert s.fits_device is False and s.memory_fraction == 2.0
    assert "--kv_cache_free_gpu_memory_fraction" not in s.server_args()


def test_the_rules():
    assert exact_fraction("device", 10, 80, 20) == 0.375 and exact_fraction("free", 10, 80, 20) == pytest.approx(1 / 6)
    assert non_kv_from_fraction("device", 0.5, 80, 30) == 10 and non_kv_from_fraction("free", 0.5, 80, 30) == 20


def test_the_recommendation_writes_the_backends_knobs():
    for kind, knobs in (("vllm", {"max_batch_size": "max_num_seqs", "memory_fraction": "gpu_memory_utilization"}),
                        ("trtllm", {"max_batch_size": "max_batch_size",
                                    "memory_fraction": "kv_cache_free_gpu_memory_fraction"})):
        sizing = size_kv(inputs(kind)).to_dict()
        rec = ProductionRecommendation(precision="bf16", knobs=knobs, based_on={"config": "c", "level": "l"})
        apply_verification(rec, Verification(passed=True, attempts=[
            {"sizing": sizing, "stress": {}, "traffic": {}, "passed": True, "reasons": [], "checks": []}]))
        written = rec.to_file()
        for name, value in sizing["knobs"].items():
            assert written[name] == value
        assert rec.memory_fraction == {"vllm": 0.375, "trtllm": 0.167}[kind]
    assert "gpu_memory_utilization" not in written and "max_num_seqs" not in written


def test_points_written_before_the_rule_was_recorded():
    assert memory_fraction_of(None) == "device"
    assert memory_fraction_of(ServerRecord(knobs={"memory_fraction": "kv_cache_free_gpu_memory_fraction"})) == "free"
    assert memory_fraction_of(ServerRecord(memory_fraction_of="free")) == "free"


def test_labels_use_each_servers_own_words():
    from servesweep.backends import config_from_dict

    common = {"model": "/m", "max_batch_size": 8, "memory_fraction": 0.5}
    assert config_from_dict({"kind": "vllm", **common}).label() == "bf16-seqs8-gmu0.5"
    assert config_from_dict({"kind": "trtllm", **common}).label() == "trtllm-bf16-batch8-freemem0.5"


def test_dummy_weights_and_vllms_load_format():
    from servesweep.backends import config_from_dict
    from servesweep.backends.vllm import build_argv

    old = config_from_dict({"kind": "vllm", "model": "/m", "load_format": "dummy"})
    assert old.dummy_weights is True and build_argv(old, 8000)[-2:] == ["--load-format", "dummy"]
    assert "--load-format" not in build_argv(config_from_dict({"kind": "vllm", "model": "/m"}), 8000)
    with pytest.raises(ValueError, match="cannot run on dummy weights"):
        config_from_dict({"kind": "trtllm", "model": "/m", "dummy_weights": True})
