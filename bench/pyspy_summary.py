"""Where a `servesweep run`'s event loop spent its time, from py-spy's raw (collapsed-stack) output.

    py-spy record -r 250 -f raw -o prof.txt -- python -m servesweep run ...
    python bench/pyspy_summary.py prof.txt [--top 20]

Only the event loop's samples count (stacks under `run_async`, module imports left out); each line
is a function's share of them, by its own frames (self) and with what it called (inclusive).
Accepts a gzip-compressed file (.gz), as committed under bench/results/.
"""

from __future__ import annotations

import argparse
import gzip
from collections import Counter
from pathlib import Path


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split('/')[-1].split(':')[0]})"


def summarize(path: Path) -> tuple[int, Counter, Counter]:
    opener = gzip.open if path.suffix == ".gz" else open
    own, inclusive, total = Counter(), Counter(), 0
    with opener(path, "rt") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if "run_async" not in stack or "_find_and_load" in stack:
                continue
            n = int(count)
            total += n
            frames = [_short(f) for f in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    total, own, inclusive = summarize(args.profile)
    print(f"event-loop samples: {total}")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"--- {title}")
        for frame, n in counts.most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
