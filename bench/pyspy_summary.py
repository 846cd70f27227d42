"""Where a `servesweep run`'s event loop spent its time, from py-spy's raw (collapsed-stack) output.

    py-spy record -r 250 -f raw -o prof.txt -- python -m servesweep run ...
    python bench/pyspy_summary.py prof.txt [--top 20]
    python bench/pyspy_summary.py a.txt.gz b.txt.gz --rate 250 \\
        --group setup=build_prompts,synthetic_prompts --json summary.json

Only the event loop's samples count (stacks under `run_async`, module imports left out); each line
is a function's share of them, by its own frames (self) and with what it called (inclusive).
Accepts a gzip-compressed file (.gz), as committed under bench/results/.

`--group NAME=F1,F2,...` counts the samples whose stack passes through any of the functions F1,
F2, ... (a name matches the function itself and anything defined inside it: `synthetic_prompts`
matches `synthetic_prompts.<locals>.one`); each sample counts once however many of them it holds.
`--json OUT` writes every profile's counts (samples, self and inclusive per function, groups) as
one JSON file, keyed by the profile's file name, the same bytes for the same input: the raw figures
that docs quote from a profile are checked against it (docs/figures.yaml). `--rate` (py-spy's
`-r`, samples per second) adds each profile's seconds of event-loop time.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split('/')[-1].split(':')[0]})"


def _in_group(frames: list[str], functions: tuple[str, ...]) -> bool:
    names = {f.partition(" (")[0] for f in frames}
    return any(n == g or n.startswith(g + ".") for n in names for g in functions)


def summarize(path: Path, groups: dict[str, tuple[str, ...]] | None = None) \
        -> tuple[int, Counter, Counter, Counter]:
    """(event-loop samples, self counts, inclusive counts, group counts) of one raw profile."""
    opener = gzip.open if path.suffix == ".gz" else open
    own, inclusive, grouped, total = Counter(), Counter(), Counter(), 0
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
            for name, functions in (groups or {}).items():
                if _in_group(frames, functions):
                    grouped[name] += n
    return total, own, inclusive, grouped


def _ordered(counts: Counter) -> dict[str, int]:
    """Most samples first, ties by name: the same order for the same counts."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summary(paths: list[Path], groups: dict[str, tuple[str, ...]], rate_hz: float | None) -> dict[str, Any]:
    """The JSON summary of `paths` (see the module's doc)."""
    profiles = {}
    for path in paths:
        total, own, inclusive, grouped = summarize(path, groups)
        entry: dict[str, Any] = {"event_loop_samples": total}
        if rate_hz:
            entry["seconds"] = total / rate_hz
        entry["groups"] = {name: grouped[name] for name in groups}
        entry["self"] = _ordered(own)
        entry["inclusive"] = _ordered(inclusive)
        profiles[path.name] = entry
    return {"tool": "bench/pyspy_summary.py", "scope": "event-loop samples (stacks under run_async, imports left out)",
            "rate_hz": rate_hz, "groups": {name: list(functions) for name, functions in groups.items()},
            "profiles": profiles}


def _group(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, functions = text.partition("=")
    if not sep or not name or not functions:
        raise argparse.ArgumentTypeError(f"--group {text!r}: expected NAME=FUNCTION[,FUNCTION...]")
    return name, tuple(f for f in functions.split(",") if f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--group", type=_group, action="append", default=[], metavar="NAME=F1,F2")
    parser.add_argument("--rate", type=float, help="py-spy's sampling rate (-r), samples per second")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every profile's counts here")
    args = parser.parse_args()
    groups = dict(args.group)
    if args.json:
        args.json.write_text(json.dumps(summary(args.profiles, groups, args.rate), indent=1) + "\n")
    for path in args.profiles:
        total, own, inclusive, grouped = summarize(path, groups)
        print(f"{path.name}: event-loop samples: {total}")
        for name in groups:
            print(f"{100 * grouped[name] / total:5.1f}%  group {name}")
        for title, counts in (("self", own), ("inclusive", inclusive)):
            print(f"--- {title}")
            for frame, n in counts.most_common(args.top):
                print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
