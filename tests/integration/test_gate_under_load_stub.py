"""The accuracy gate under load against the in-process stub server: the load runs while the gate
measures (its requests are in flight and complete inside the measurement's window), the sweep's
step after a configuration's levels writes the measurement and a rerun skips it, a load that
cannot run is recorded as not measured, and `servesweep gate --under-load N`.

The stub answers exact-match prompts with "x" x max_tokens, so half of the eval set is right."""

import io
import json

from rich.console import Console

from servesweep.backends.telemetry import PrometheusReader, TelemetrySampler
from servesweep.backends.vllm import METRICS
from servesweep.cli import main
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.load_runner import run_async
from servesweep.loadgen.workload import Workload
from servesweep.quality.gate.spec import file_sha256, load_eval_set, load_gate_spec
from servesweep.quality.gate.under_load import measure_under_load
from servesweep.results import GATE_UNDER_LOAD_MEASUREMENT_FILE, append_point
from servesweep.scenarios.schema import Scenario
from servesweep.sweep.sweep_runner import SweepRunner

STUB = {"ttft_s": 0.05, "itl_s": 0.005, "metrics": True}  # a load request takes ~0.1 s, a gate wave ~0.06 s


def write_spec(tmp_path, under_load=True):
    rows = [{"id": str(i), "prompt": f"q{i}", "answer": "xxx" if i % 2 else "yyy"} for i in range(24)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gate = {"metric": "exact_match", "threshold": {"max_drop_points": 1.0},
            "method": {"eval_set": "eval.jsonl", "eval_set_sha256": file_sha256(tmp_path / "eval.jsonl"),
                       "decoding": {"max_tokens": 3}}, "under_load": under_load}
    path = tmp_path / "gate.yaml"
    path.write_text(json.dumps({"accuracy_gate": gate}))
    return path


def sampler(stub, path):
    return TelemetrySampler(PrometheusReader(stub.url + "/metrics", METRICS), path, interval_s=0.05)


def test_the_gate_is_measured_while_the_load_runs(tmp_path, stub_server):
    stub = stub_server(**STUB)
    spec = load_gate_spec(write_spec(tmp_path))
    result = run_async(measure_under_load(
        spec, load_eval_set(spec), stub.url, None, "bf16", Workload(input_len=8, output_len=10),
        LoadLevel(concurrency=4, num_requests=8), "test", tmp_path / "records.jsonl",
        telemetry=sampler(stub, tmp_path / "telemetry.jsonl")))
    assert result.status == "measured" and result.measurement.value == 0.5
    load = result.load
    # The measurement's window lies inside the load's, and the load was busy all through it.
    assert load.load_start_s <= load.gate_start_s < load.gate_end_s <= load.load_end_s
    assert load.requests_overlapping > 0 and load.completed_during > 0 and load.failed_during == 0
    assert load.in_flight_mean > 3.5  # 4 closed-loop users
    assert load.output_tokens_during > 0
    # The server saw the load and the gate's own requests together.
    assert load.running_batch_mean > 4
    assert load.whole_load["completed"] >= load.completed_during and load.whole_load["failed"] == 0
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == load.whole_load["completed"] + load.whole_load["cancelled"]


class StubAsServer:
    """The stub in the place of a launched server (what SweepRunner uses of one)."""

    tokenizer_dir = None  # the stub serves /tokenize

    def __init__(self, stub, config):
        self.stub, self.config = stub, config
        self.base_url, self.model_name = stub.url, "stub-model"

    def telemetry(self, path, interval_s=0.05):
        return sampler(self.stub, path)

    def poll_failure(self):
        return None


def ok_point(config, conc, rps):
    return {"config": config.label(), "config_spec": config.model_dump(mode="json"), "level": f"c{conc}",
            "level_spec": {"concurrency": conc, "num_requests": 8}, "status": "ok",
            "summary": {"completed": 8, "failed": 0, "request_throughput": rps, "output_token_throughput": 10 * rps}}


def _runner(tmp_path, spec_path):
    scenario = Scenario.model_validate({
        "name": "t", "model": "/m", "accuracy_gate": str(spec_path), "sweep": {"precision": ["fp32"]},
        "workload": {"input_len": 8, "output_len": 10}, "load": {"concurrency": [1, 3], "num_requests": 8}})
    out = tmp_path / "out"
    runner = SweepRunner(scenario, spec_path, out, Console(file=io.StringIO()), show_progress=False)
    config = runner.configs("/m")[0]
    return runner, config, out / "configs" / config.label()


def test_sweep_measures_under_the_best_level_and_a_rerun_skips_it(tmp_path, stub_server):
    stub = stub_server(**STUB)
    runner, config, config_dir = _runner(tmp_path, write_spec(tmp_path))
    runner.out.mkdir()
    for conc, rps in ((1, 5.0), (3, 12.0)):
        append_point(runner.out, ok_point(config, conc, rps))
    server = StubAsServer(stub, config)
    runner.gate.measure(server, config_dir)
    runner.gate.under_load(server, config, config_dir)
    path = config_dir / GATE_UNDER_LOAD_MEASUREMENT_FILE
    measured = json.loads(path.read_text())
    assert measured["status"] == "measured" and measured["precision"] == "fp32"
    load = measured["load"]
    assert load["label"] == "c3" and load["source"] == "the level with the best request throughput"
    assert load["requests_overlapping"] > 0 and load["completed_during"] > 0
    assert (config_dir / "gate-under-load-records.jsonl").exists()
    before = path.stat().st_mtime_ns
    runner.gate.under_load(server, config, config_dir)  # a rerun: the file is there, nothing runs
    assert path.stat().st_mtime_ns == before
    runner.gate.verdicts()
    verdict = json.loads((config_dir / "gate-under-load.json").read_text())
    assert verdict["status"] == "passed" and verdict["value"] == 0.5 and verdict["reference_value"] == 0.5


def test_a_load_that_cannot_run_is_recorded_as_not_measured(tmp_path, stub_server):
    stub = stub_server(mode="http_error")
    runner, config, config_dir = _runner(tmp_path, write_spec(tmp_path, {"concurrency": 2}))
    runner.gate.under_load(StubAsServer(stub, config), config, config_dir)
    measured = json.loads((config_dir / GATE_UNDER_LOAD_MEASUREMENT_FILE).read_text())
    assert measured["status"] == "not_measured" and measured["measurement"] is None
    assert measured["cause"] == "the load's first request failed (http_error: stub refuses this request)"
    # No ok points and no spec concurrency: nothing to take the load from, and the file says so.
    runner, config, config_dir = _runner(tmp_path / "b", write_spec(tmp_path))
    runner.gate.under_load(StubAsServer(stub, config), config, config_dir)
    measured = json.loads((config_dir / GATE_UNDER_LOAD_MEASUREMENT_FILE).read_text())
    assert measured["status"] == "not_measured" and "no ok load level" in measured["cause"]


def test_gate_cli_under_load(tmp_path, stub_server):
    stub = stub_server(**STUB)
    spec = write_spec(tmp_path, False)
    assert main(["gate", "--spec", str(spec), "--url", stub.url, "--record-reference", "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "loaded"
    code = main(["gate", "--spec", str(spec), "--url", stub.url, "--reference", str(tmp_path / "ref" / "reference.json"),
                 "--under-load", "2", "--out", str(out)])
    result = json.loads((out / "gate.json").read_text())
    assert code == 0 and result["status"] == "passed", result["message"]
    assert result["message"].startswith("PASSED under load (c2): exact-match accuracy 50.0%")
    assert result["load"]["concurrency"] == 2 and result["load"]["requests_overlapping"] > 0
    assert result["load"]["source"] == "--under-load"
    # A reference is measured unloaded: asking for both is refused.
    code = main(["gate", "--spec", str(spec), "--url", stub.url, "--record-reference", "--under-load", "2",
                 "--out", str(tmp_path / "both")])
    assert code == 2 and "references are measured unloaded" in json.loads((tmp_path / "both" / "gate.json").read_text())["message"]


class LaunchedStub(StubAsServer):
    version, startup_s, kv_pool = "stub", 0.0, {"tokens": None}

    def info(self):
        return {"backend": "stub"}

    def telemetry(self, path, interval_s=0.25):
        return None  # a level with telemetry idles a second at its end: too slow for this test

    def stop(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def test_a_sweep_through_the_stub_measures_each_configuration_under_load_and_resumes(tmp_path, stub_server,
                                                                                     monkeypatch):
    stub = stub_server(ttft_s=0.01, itl_s=0.001)
    launches = []

    def launch(config, config_dir):
        launches.append(config.label())
        return LaunchedStub(stub, config)

    monkeypatch.setattr("servesweep.sweep.sweep_runner.launch", launch)
    spec = write_spec(tmp_path)
    scenario = Scenario.model_validate({
        "name": "t", "model": "/m", "accuracy_gate": str(spec), "sweep": {"precision": ["fp32", "bf16"]},
        "workload": {"input_len": 8, "output_len": 10}, "load": {"concurrency": [1, 2], "num_requests": 4},
        "verify": False})
    out = tmp_path / "out"
    runner = SweepRunner(scenario, spec, out, Console(file=io.StringIO()), show_progress=False)
    runner.run()
    assert sorted(launches) == ["bf16", "fp32"]
    for precision in ("fp32", "bf16"):
        verdict = json.loads((out / "configs" / precision / "gate-under-load.json").read_text())
        assert verdict["status"] == "passed" and verdict["reference_precision"] == "fp32"
        assert verdict["load"]["concurrency"] in (1, 2) and verdict["load"]["requests_overlapping"] > 0
    # Everything on disk: a rerun starts no server.
    launches.clear()
    runner.run()
    assert launches == []
    # A configuration whose measurement under load is missing (stopped mid-way): only it starts again.
    (out / "configs" / "bf16" / GATE_UNDER_LOAD_MEASUREMENT_FILE).unlink()
    runner.run()
    assert launches == ["bf16"] and (out / "configs" / "bf16" / GATE_UNDER_LOAD_MEASUREMENT_FILE).exists()
    assert len([line for line in (out / "points.jsonl").read_text().splitlines() if line]) == 4
