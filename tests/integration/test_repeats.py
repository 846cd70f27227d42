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
