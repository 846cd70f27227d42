"""Sweeps without a real server: failed configurations and report errors (the real sweep is in e2e/)."""

import json
import time
from pathlib import Path

import pytest

from servesweep.cli import main
from servesweep.results import read_points



def test_configs_that_cannot_start_become_failed_points(tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"""
name: broken-model
model: {tmp_path / 'no-such-model'}
load: {{concurrency: [1, 4], num_requests: 4}}
sweep: {{precision: [bf16, fp32]}}
""")
    # Nothing started, so nothing can be recommended: exit 6 with the reason on the console.
    assert main(["sweep", str(scenario), "--out", str(tmp_path / "out"), "--no-report"]) == 6
    assert "NO RECOMMENDATION: no point was measured (4 failed)" in capsys.readouterr().err
    points = read_points(tmp_path / "out")
    assert len(points) == 4
    assert {p.status for p in points} == {"failed"}
    assert {p.cause for p in points} == {"bad model path"}
    # What the report names as the model of every figure; no training record in a plain directory.
    assert json.loads((tmp_path / "out" / "model.json").read_text()) == {"schema_version": 1,
                                                                      "path": str(tmp_path / "no-such-model"),
                                                                      "training": None}


def test_report_on_a_non_sweep_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "scenario.json").write_text("{}")
    (sweep / "points.jsonl").write_text('{"config": "a", "level": "c1", "status": "failed"}\n')
    assert main(["report", str(sweep)]) == 2
    assert "points.jsonl:1: not a sweep point (config_spec: field required)" in capsys.readouterr().err
    (sweep / "points.jsonl").write_text(json.dumps({"config": "a", "config_spec": {}, "level": "c1",
                                                    "level_spec": {}, "status": "failed"}) + "\n")
    assert main(["report", str(sweep), "--quality-from", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a sweep directory" in capsys.readouterr().err


def test_report_without_a_recommendation_says_why_and_exits_6(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "scenario.json").write_text(json.dumps({"name": "s", "slo": {"ttft_ms": 1000, "percentile": 99},
                                                     "vram_budget_gib": 80}))
    import sys
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from tests_support import point

    (sweep / "points.jsonl").write_text(json.dumps(point("bf16", 4, 100, ttft_p99=4000.0)) + "\n")
    assert main(["report", str(sweep)]) == 6
    assert "NO RECOMMENDATION: no point met the SLOs (1 measured)" in capsys.readouterr().err
    rec = json.loads((sweep / "recommendation.json").read_text())
    assert rec["production_recommendation"] is None
    assert rec["no_recommendation"]["reason"] == "no point met the SLOs (1 measured)"
    assert "NO RECOMMENDATION" in (sweep / "report.md").read_text()
