"""`sweep: {search: auto}` end to end against the stand-in server: the search starts what it
chooses, writes search.json, resumes without starting again, and the report has its section."""

import json

from servesweep.cli import main
from servesweep.results.config_search_record import SKIP_DOMINATED, read_search_record
from tests.integration.test_gate_under_load_stub import LaunchedStub

SCENARIO = """
name: search-stub
model: /m
workload: {input_len: 8, output_len: 4}
load:
  concurrency: auto
  ladder: {max_concurrency: 2, bisect_steps: 0}
  num_requests: 4
slo: {ttft_ms: 10000}
sweep:
  max_num_seqs: [1, 2]
  max_num_batched_tokens: [64, 128]
  search: {method: auto, noise_floor: 0.1}
verify: false
drift: null
"""


def test_config_search_through_the_stub(tmp_path, stub_server, monkeypatch, capsys):
    stub = stub_server(ttft_s=0.002, itl_s=0.0005)
    launches = []

    def launch(config, config_dir):
        launches.append(config.label())
        return LaunchedStub(stub, config)

    monkeypatch.setattr("servesweep.sweep.sweep_runner.launch", launch)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    assert main(["sweep", str(scenario), "--out", str(out), "--no-progress"]) == 0
    # The top cap, then the other value of max_num_batched_tokens; whichever measured better, the
    # lower cap at either is dominated by a measured configuration: 2 of 4 started, whatever the timings.
    assert launches == ["bf16-seqs2-tok64", "bf16-seqs2-tok128"]
    record = read_search_record(out)
    assert record.starts == 2 and record.grid_size == 4 and record.stop_reason == "converged"
    assert record.best is not None and record.best.config in launches
    assert {s.config: s.rule for s in record.skipped} == {"bf16-seqs1-tok64": SKIP_DOMINATED,
                                                         "bf16-seqs1-tok128": SKIP_DOMINATED}
    assert record.steps[0].why.startswith("start:") and "the best beyond the noise so far" in record.steps[1].why
    err = capsys.readouterr().err
    assert "config search: best" in err and "after 2 of 4 starts" in err
    report = (out / "report.md").read_text()
    assert "## Config search" in report and "bf16-seqs1-tok64 | dominated" in report
    # The search's best (the highest goodput it measured) is the report's recommendation.
    rec = json.loads((out / "recommendation.json").read_text())["production_recommendation"]
    assert rec["based_on"]["config"] == record.best.config

    # Resumed: the same choices from the points on disk, no server started.
    launches.clear()
    assert main(["sweep", str(scenario), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert launches == []
    again = read_search_record(out)
    assert [s.config for s in again.steps] == [s.config for s in record.steps] and all(s.resumed for s in again.steps)
