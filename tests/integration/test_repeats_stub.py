"""--repeats against the stub server: each level N times with fresh prompts, ci95 in the summary."""

import json

from servesweep.cli import main


def test_run_with_repeats_writes_ci95_per_level(stub_server, tmp_path, capsys):
    stub = stub_server(ttft_s=0.005, itl_s=0.001)
    out = tmp_path / "res"
    code = main(["run", "--url", stub.url, "--concurrency", "1,2", "--num-requests", "4", "--input-len", "16",
                 "--output-len", "4", "--repeats", "3", "--out", str(out), "--no-progress", "--slo-ttft-ms", "1000"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [lv["label"] for lv in summary["levels"]] == ["c1#r1", "c1#r2", "c1#r3", "c2#r1", "c2#r2", "c2#r3"]
    assert summary["repeats"] == 3 and set(summary["ci95"]) == {"c1", "c2"}
    tput = summary["ci95"]["c2"]["output_tok_s"]
    assert tput["n"] == 3 and tput["low"] <= tput["mean"] <= tput["high"]
    assert tput["method"] == "student-t over repeats"
    assert {"goodput", "ttft_ms.p50", "ttft_ms.p99", "tpot_ms.p99", "e2e_ms.p99"} <= set(summary["ci95"]["c1"])
    assert "mean ± 95 % CI over 3 repeats" in capsys.readouterr().out


def test_repeats_refuses_zero(tmp_path):
    assert main(["run", "--url", "http://127.0.0.1:9", "--concurrency", "1", "--repeats", "0",
                 "--out", str(tmp_path / "r")]) == 2


def test_a_ladder_with_repeats_through_the_stub_repeats_uncertain_rungs_up_to_the_cap(tmp_path, stub_server,
                                                                                    monkeypatch):
    import io

    from rich.console import Console

    from servesweep.reports.repeats import repeats_section
    from servesweep.results import read_points
    from servesweep.scenarios.schema import Scenario
    from servesweep.sweep.sweep_runner import SweepRunner
    from tests.integration.test_gate_under_load_stub import LaunchedStub

    stub = stub_server(ttft_s=0.002, itl_s=0.0005)
    monkeypatch.setattr("servesweep.sweep.sweep_runner.launch", lambda config, config_dir: LaunchedStub(stub, config))
    # Every verdict "uncertain" (deterministic): each rung gets extra repeats until the cap.
    monkeypatch.setattr("servesweep.sweep.ladder.slo_uncertain", lambda obs, slo: ["ttft_ms p99 uncertain (forced)"])
    scenario = Scenario.model_validate({
        "name": "t", "model": "/m", "sweep": {"precision": ["fp32"]}, "verify": False, "drift": None,
        "workload": {"input_len": 8, "output_len": 4}, "slo": {"ttft_ms": 10000},
        "load": {"concurrency": "auto", "ladder": {"max_concurrency": 2, "bisect_steps": 0},
                 "num_requests": 4, "repeats": 2, "max_repeats": 3}})
    out = tmp_path / "out"
    (tmp_path / "s.yaml").write_text("name: t\n")
    SweepRunner(scenario, tmp_path / "s.yaml", out, Console(file=io.StringIO()), show_progress=False).run()
    points = read_points(out)
    assert [p.level for p in points] == ["c1", "c2"]
    # each point its own prompts (a rung resending the last one's would hit the prefix cache)
    assert points[0].summary.seed != points[1].summary.seed
    for p in points:
        ci = p.summary.ci95[p.level]
        assert ci["output_tok_s"].n == 3 and len(p.extra_repeats) == 1
        # the point's headline is the repeats' mean; its own figure is the whole load test's, as in
        # the level's summary.json (one name, one meaning in both files)
        assert p.summary.headline_output_token_throughput == ci["output_tok_s"].mean
        level_summary = json.loads((out / p.dir / "summary.json").read_text())
        assert p.summary.output_token_throughput == level_summary["output_token_throughput"] > 0
        raw = next(json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()
                   if json.loads(line)["level"] == p.level)
        assert raw["schema_version"] == 2 and "pooled_over_repeats" not in raw["summary"]
        assert (out / "configs" / "fp32" / p.level / "extra-1" / "summary.json").exists()
    search = json.loads((out / "configs" / "fp32" / "search.json").read_text())
    assert search["rungs"][0]["observation"]["n"] == 3 and search["rungs"][0]["uncertain"]
    assert "still uncertain at the repeat cap" in search["uncertainty"]["note"]
    md, rows, lines = repeats_section(out, points)
    assert [r[:3] for r in rows] == [["fp32", "c1", "3"], ["fp32", "c2", "3"]] and lines


def test_reset_prefix_cache_before_each_level_and_repeat(stub_server, tmp_path):
    stub = stub_server(dev_mode=True)
    out = tmp_path / "res"
    assert main(["run", "--url", stub.url, "--concurrency", "1,2", "--num-requests", "2", "--input-len", "8",
                 "--output-len", "2", "--repeats", "2", "--reset-prefix-cache", "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # one probe, then one reset per level and repeat
    assert stub.behaviour.prefix_resets == 1 + 4
    assert summary["prefix_cache_reset"] == {"requested": True, "done": True, "notes": []}


def test_reset_prefix_cache_says_when_the_server_does_not_offer_it(stub_server, tmp_path):
    stub = stub_server()
    out = tmp_path / "res"
    assert main(["run", "--url", stub.url, "--concurrency", "1", "--num-requests", "2", "--input-len", "8",
                 "--output-len", "2", "--reset-prefix-cache", "--out", str(out), "--no-progress"]) == 0
    reset = json.loads((out / "summary.json").read_text())["prefix_cache_reset"]
    assert not reset["done"] and "does not offer POST /reset_prefix_cache (HTTP 404" in reset["notes"][0]


def test_reset_prefix_cache_refuses_a_remote_target(tmp_path):
    code = main(["run", "--url", "http://10.1.2.3:8000", "--allow-remote", "--concurrency", "1",
                 "--reset-prefix-cache", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2


def test_target_precision_repeats_until_narrow_or_the_cap(stub_server, tmp_path):
    stub = stub_server(ttft_s=0.002, itl_s=0.0005)
    common = ["run", "--url", stub.url, "--concurrency", "1,2", "--num-requests", "4", "--input-len", "8",
              "--output-len", "4", "--no-progress"]
    # At least two repeats per level (an interval needs two); here the cap too.
    assert main([*common, "--target-precision", "99%", "--max-repeats", "2", "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [lv["label"] for lv in a["levels"]] == ["c1#r1", "c1#r2", "c2#r1", "c2#r2"]
    assert a["target_precision"]["target"] == 0.99 and set(a["target_precision"]["levels"]) == {"c1", "c2"}
    # A target no timing meets: repeats up to the cap, and a warning says so.
    assert main([*common, "--target-precision", "0.000001", "--max-repeats", "3", "--out", str(tmp_path / "b")]) == 0
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [lv["label"] for lv in b["levels"]] == ["c1#r1", "c1#r2", "c1#r3", "c2#r1", "c2#r2", "c2#r3"]
    assert b["target_precision"]["levels"]["c2"] == {**b["target_precision"]["levels"]["c2"], "n": 3, "reached": False}
    assert any("wider than the 0.0001% asked" in w for w in b["warnings"])
