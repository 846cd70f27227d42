"""Paired comparison of exact-match gate runs on the same tasks: which tasks each precision got right
that the reference got wrong and back, and the one-sided exact McNemar test on those flips (the
accuracy gate's `paired_alpha` rule, servesweep.quality.gate.verdict).

The gate judges the drop in accuracy against a fixed limit (the same limit for every model); both
precisions answer the same tasks, so the flips say whether a drop is more than the noise of which
near-ties tip over, which the two unpaired binomial intervals cannot.

    python bench/paired_exact_match.py examples/h100-2026-12-07-smollm2/quality-smollm2/exact-match \
        --out examples/h100-2026-12-07-smollm2/quality-smollm2/exact-match/paired.json

Reads `fp32/reference.json` and every other `<precision>/gate.json` under the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from servesweep.quality.gate.verdict import correct_count, paired_flips, paired_p_value, read_reference
from servesweep.results.io import write_json


def paired(reference_file: Path, gate_file: Path) -> dict:
    reference, candidate = read_reference(reference_file), read_reference(gate_file)
    lost, gained = paired_flips(reference, candidate)
    return {
        "tasks": len(reference.samples),
        "reference_correct": correct_count(reference),
        "correct": correct_count(candidate),
        "lost": lost,
        "gained": gained,
        # The gate's own test (paired_alpha in the spec): one-sided, a loss is what it looks for.
        "mcnemar_exact_p_one_sided": round(paired_p_value(lost, gained), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the exact-match folder: fp32/reference.json, <precision>/gate.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    reference_file = args.folder / "fp32" / "reference.json"
    result = {"reference": "fp32", "precisions": {}}
    for gate_file in sorted(args.folder.glob("*/gate.json")):
        result["precisions"][gate_file.parent.name] = paired(reference_file, gate_file)
    write_json(args.out, result)
    for precision, row in result["precisions"].items():
        print(f"{precision}: {row['correct']}/{row['tasks']} vs fp32 {row['reference_correct']}: lost {row['lost']}, "
              f"gained {row['gained']}, one-sided exact McNemar p = {row['mcnemar_exact_p_one_sided']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
