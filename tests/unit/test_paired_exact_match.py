"""bench/paired_exact_match.py: the paired flips and the exact McNemar test, and the committed
paired.json is what the gate files beside it give (docs/smollm2.md quotes it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("paired_exact_match", ROOT / "bench" / "paired_exact_match.py")
paired_exact_match = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_exact_match)


def test_flips_are_counted_both_ways():
    reference = {"a": True, "b": True, "c": False, "d": True}
    other = {"a": False, "b": True, "c": True, "d": False}
    row = paired_exact_match.paired(reference, other)
    assert (row["lost"], row["gained"], row["reference_correct"], row["correct"]) == (2, 1, 3, 2)


def test_eleven_lost_for_two_gained_is_unlikely_by_chance_and_one_each_way_is_not():
    ref = {str(i): i < 11 for i in range(20)} | {"g1": False, "g2": False}
    other = {str(i): False for i in range(20)} | {"g1": True, "g2": True}
    assert paired_exact_match.paired(ref, other)["mcnemar_exact_p"] == pytest.approx(0.0225, abs=1e-4)
    assert paired_exact_match.paired({"a": True, "b": False}, {"a": False, "b": True})["mcnemar_exact_p"] == 1.0


def test_runs_over_different_tasks_are_refused():
    with pytest.raises(SystemExit):
        paired_exact_match.paired({"a": True}, {"b": True})


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/*/*/exact-match/paired.json")))
def test_a_committed_paired_file_is_what_its_gate_files_give(path, tmp_path, monkeypatch):
    out = tmp_path / "paired.json"
    monkeypatch.setattr("sys.argv", ["paired_exact_match.py", str(path.parent), "--out", str(out)])
    assert paired_exact_match.main() == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text())
