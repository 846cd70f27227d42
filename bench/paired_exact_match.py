"""Paired comparison of exact-match gate runs on the same tasks: which tasks each precision got right
that the reference got wrong and back, and the exact McNemar test on those flips.

The gate judges the drop in accuracy against a fixed limit (the same limit for every model); both
precisions answer the same tasks, so the flips say whether a drop is more than the noise of which
near-ties tip over, which the two unpaired binomial intervals cannot.

    python bench/paired_exact_match.py examples/h100-2026-12-07-smollm2/quality-smollm2/exact-match \
        --out examples/h100-2026-12-07-smollm2/quality-smollm2/exact-match/paired.json

Reads `fp32/reference.json` and every other `<precision>/gate.json` under the folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import binomtest

from servesweep.results.io import write_json


def correct_by_task(measurement: dict) -> dict[str, bool]:
    return {sample["id"]: bool(sample["correct"]) for sample in measurement["samples"]}


def paired(reference: dict[str, bool], other: dict[str, bool]) -> dict:
    if reference.keys() != other.keys():
        raise SystemExit("error: the two runs did not answer the same tasks")
    lost = sum(1 for task, ok in reference.items() if ok and not other[task])
    gained = sum(1 for task, ok in reference.items() if not ok and other[task])
    flips = lost + gained
    # Exact McNemar: under "no difference" each flip goes either way with probability 1/2.
    p_value = binomtest(lost, flips, 0.5).pvalue if flips else 1.0
    return {
        "tasks": len(reference),
        "reference_correct": sum(reference.values()),
        "correct": sum(other.values()),
        "lost": lost,
        "gained": gained,
        "mcnemar_exact_p": round(p_value, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the exact-match folder: fp32/reference.json, <precision>/gate.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    reference = correct_by_task(json.loads((args.folder / "fp32" / "reference.json").read_text()))
    result = {"reference": "fp32", "precisions": {}}
    for gate_file in sorted(args.folder.glob("*/gate.json")):
        gate = json.loads(gate_file.read_text())
        result["precisions"][gate_file.parent.name] = paired(reference, correct_by_task(gate["measurement"]))
    write_json(args.out, result)
    for precision, row in result["precisions"].items():
        print(f"{precision}: {row['correct']}/{row['tasks']} vs fp32 {row['reference_correct']}: "
              f"lost {row['lost']}, gained {row['gained']}, exact McNemar p = {row['mcnemar_exact_p']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
