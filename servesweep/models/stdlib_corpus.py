"""Offline text for training and evaluating a small model: the Python standard library's sources.

Files are split into train and held-out parts by a hash of the file name, so the split is the
same on every Python version and machine, and a file is never in both. The evaluation sets
shipped in `scenarios/evalsets/` were cut from held-out files only.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

import numpy as np

HELD_OUT_SHARE = 10  # one file in ten


def stdlib_sources() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(stdlib.glob("*.py"))


def is_held_out(path: Path) -> bool:
    return hashlib.sha256(path.name.encode()).digest()[0] % HELD_OUT_SHARE == 0


def split_sources() -> tuple[list[Path], list[Path]]:
    """(train files, held-out files)."""
    files = stdlib_sources()
    return [f for f in files if not is_held_out(f)], [f for f in files if is_held_out(f)]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)


def perplexity_texts(files: list[Path], n: int, chars: int, seed: int) -> list[dict[str, str]]:
    """`n` passages of whole lines, about `chars` characters each, from random places in `files`."""
    rng = np.random.default_rng(seed)
    samples = []
    while len(samples) < n:
        path = files[rng.integers(len(files))]
        lines = _lines(path)
        start = int(rng.integers(max(1, len(lines) - 40)))
        text = ""
        for line in lines[start:]:
            if len(text) + len(line) > chars:
                break
            text += line
        if len(text) >= chars // 2 and text.strip():
            samples.append({"id": f"{path.name}:{start + 1}", "text": text})
    return samples


def line_completion_tasks(files: list[Path], n: int, context_chars: int, seed: int) -> list[dict[str, str]]:
    """Code completion: given the preceding lines and the start of a line, produce the rest of it.

    The split is placed before a `.([:),` in the line's second half, leaving 1-20 characters, so the
    prompt never ends in whitespace (byte-level BPE merges a space with the next word, and a prompt
    ending in one would ask for a token boundary the model never saw)."""
    rng = np.random.default_rng(seed)
    tasks = []
    seen = set()
    while len(tasks) < n:
        path = files[rng.integers(len(files))]
        lines = _lines(path)
        if len(lines) < 20:
            continue
        i = int(rng.integers(10, len(lines)))
        line = lines[i].rstrip("\n")
        code = line.strip()
        if len(code) < 8 or code.startswith(("#", '"', "'")) or (path.name, i) in seen:
            continue
        splits = [p for p in range(len(line) // 2, len(line)) if line[p] in ".([:)," and 1 <= len(line) - p <= 20]
        if not splits:
            continue
        split = splits[int(rng.integers(len(splits)))]
        context = ""
        for previous in reversed(lines[:i]):
            if len(context) + len(previous) > context_chars:
                break
            context = previous + context
        seen.add((path.name, i))
        tasks.append({"id": f"{path.name}:{i + 1}", "prompt": context + line[:split], "answer": line[split:].rstrip()})
    return tasks


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    """Write rows and return the file's sha256, the hash a gate spec pins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    """`python -m servesweep.models.stdlib_corpus --out scenarios/evalsets`"""
    import argparse

    parser = argparse.ArgumentParser(description="cut evaluation sets from the held-out stdlib files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, held_out = split_sources()
    for name, rows in [
        ("stdlib-heldout-perplexity.jsonl", perplexity_texts(held_out, 64, 1200, args.seed)),
        ("stdlib-heldout-completion.jsonl", line_completion_tasks(held_out, 200, 1200, args.seed)),
    ]:
        digest = write_jsonl(args.out / name, rows)
        print(f"{args.out / name}: {len(rows)} samples, sha256 {digest}")


if __name__ == "__main__":
    main()
