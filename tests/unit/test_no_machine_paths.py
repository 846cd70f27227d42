"""No committed result names a file of the repository by the absolute path of the machine that
wrote it (issue 36: `method.eval_set` held `/work/main/scenarios/evalsets/...`). Result files under
examples/ and bench/results/ name the repository's files relative to its root, as a clone has them;
servesweep writes them so (servesweep.files.display_path). Server logs (*.log) are kept verbatim.

Not covered (listed, not hidden): the exact command line and model directory of a launched server
(`server.command`, `config_spec.model`), which keep the paths the server was started with."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from servesweep.files import display_path
from servesweep.quality.gate.spec import Method

ROOT = Path(__file__).resolve().parents[2]
TOP = ("bench", "docs", "examples", "scenarios", "servesweep", "tests")
# An absolute path whose tail is a path inside a checkout: /anything/<top-level folder>/...
INTO_A_CHECKOUT = re.compile(r"(?<![\w.~-])/(?:[\w.+-]+/)+?(?:%s)/[\w./+-]+" % "|".join(TOP))


def _committed_results() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "examples", "bench/results"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    return [ROOT / f for f in listed if not f.endswith((".log", ".png"))]


def checkout_paths(text: str) -> list[str]:
    """Absolute paths in `text` that point into a checkout of this repository."""
    out = []
    for m in INTO_A_CHECKOUT.finditer(text):
        tail = re.split(r"/(?=(?:%s)/)" % "|".join(TOP), m.group(0), maxsplit=1)[-1]
        if (ROOT / tail).exists():  # a file or folder every clone has
            out.append(m.group(0))
    return out


def test_no_committed_result_names_a_repository_file_by_a_machine_path():
    found = {}
    for path in _committed_results():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if hits := checkout_paths(text):
            found[str(path.relative_to(ROOT))] = sorted(set(hits))[:3]
    assert found == {}


def test_the_scan_finds_the_path_the_issue_found():
    text = '{"method": {"eval_set": "/work/main/scenarios/evalsets/stdlib-heldout-perplexity.jsonl"}}'
    assert checkout_paths(text) == ["/work/main/scenarios/evalsets/stdlib-heldout-perplexity.jsonl"]
    assert checkout_paths('{"model": "/tmp/llama3-8b-dummy", "eval_set": "scenarios/evalsets/x.jsonl"}') == []


def test_the_gate_writes_its_eval_set_relative_to_the_working_directory(monkeypatch):
    monkeypatch.chdir(ROOT)
    eval_set = ROOT / "scenarios" / "evalsets" / "stdlib-heldout-perplexity.jsonl"
    method = Method(eval_set=eval_set, eval_set_sha256="0" * 64)
    assert method.model_dump(mode="json")["eval_set"] == "scenarios/evalsets/stdlib-heldout-perplexity.jsonl"
    assert method.eval_set == eval_set  # still absolute in memory: the gate reads it from there
    assert display_path(Path("/elsewhere/x.jsonl")) == "/elsewhere/x.jsonl"  # outside: as it is
