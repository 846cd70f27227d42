"""bench/pyspy_summary.py: the committed profile summaries (pyspy_summary.json, whose shares the docs
quote through docs/figures.yaml) are what the committed raw stacks beside them give (issue 36)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("pyspy_summary", ROOT / "bench" / "pyspy_summary.py")
pyspy_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pyspy_summary)

SUMMARIES = sorted((ROOT / "bench" / "results").rglob("pyspy_summary.json"))


def test_there_is_a_committed_summary():
    assert SUMMARIES


@pytest.mark.parametrize("path", SUMMARIES, ids=[str(p.relative_to(ROOT)) for p in SUMMARIES])
def test_a_committed_summary_is_what_its_raw_stacks_give(path):
    committed = json.loads(path.read_text())
    groups = {name: tuple(functions) for name, functions in committed["groups"].items()}
    stacks = [path.parent / name for name in committed["profiles"]]
    assert all(p.is_file() for p in stacks), "the raw stacks are committed beside the summary"
    again = pyspy_summary.summary(stacks, groups, committed["rate_hz"])
    assert json.dumps(again, indent=1) + "\n" == path.read_text()


def _profile(tmp_path: Path) -> Path:
    lines = [
        "main (m.py:1);run_async (runner.py:2);Runner.run (runners.py:3);build_prompts (w.py:4) 3",
        "main (m.py:1);run_async (runner.py:2);synthetic_prompts.<locals>.one (w.py:5);enc (t.py:6) 2",
        "main (m.py:1);run_async (runner.py:2);build_prompts (w.py:4);synthetic_prompts (w.py:7) 1",
        "main (m.py:1);run_async (runner.py:2);read (h.py:8);synthetic_promptsX (w.py:9) 4",
        "main (m.py:1);run_async (runner.py:2);_find_and_load (<frozen importlib>:1) 7",
        "main (m.py:1);other (o.py:1) 5",
    ]
    path = tmp_path / "prof.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_counts_event_loop_samples_once_per_group_and_by_function_name(tmp_path):
    groups = {"setup": ("build_prompts", "synthetic_prompts")}
    total, own, inclusive, grouped = pyspy_summary.summarize(_profile(tmp_path), groups)
    assert total == 10  # neither the import nor the stack outside run_async
    assert grouped["setup"] == 6  # the stack through both functions counts once; synthetic_promptsX is not one
    assert own["enc (t.py)"] == 2 and inclusive["build_prompts (w.py)"] == 4


def test_the_json_summary_keys_profiles_by_file_name_and_adds_seconds_from_the_rate(tmp_path):
    out = pyspy_summary.summary([_profile(tmp_path)], {"setup": ("build_prompts",)}, 250.0)
    entry = out["profiles"]["prof.txt"]
    assert entry["event_loop_samples"] == 10 and entry["seconds"] == 10 / 250
    assert entry["groups"] == {"setup": 4}
    assert list(entry["self"].values()) == sorted(entry["self"].values(), reverse=True)
    assert "seconds" not in pyspy_summary.summary([_profile(tmp_path)], {}, None)["profiles"]["prof.txt"]
