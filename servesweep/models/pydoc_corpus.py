"""Natural English text that ships with every Python: the documentation topics of `pydoc_data`.

A real LLM's perplexity means most on prose, and the standard library's help topics (the
language reference's sections, as `help("assert")` shows them) are prose written by people,
present offline on every machine. The passages are fixed slices: per topic, in name order, the
first run of whole prose paragraphs (no indented code or grammar blocks, no headings) of at most
`chars` characters. The file written is committed and pinned by its sha256 in the gate specs, so
a Python whose topics differ cannot change a measurement; each row names its topic and the
Python version it was cut from.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

HEADING_RULE = re.compile(r"^[*=\-~^\"]{3,}$")


def _wordy(text: str) -> bool:
    """Mostly letters and spaces: sentences, not signatures such as `object.__add__(self, other)`."""
    return sum(c.isalpha() or c == " " for c in text) >= 0.9 * len(text)


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text: not indented (code, grammar, tables), not a heading, not a list item."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if len(lines) >= 2 and HEADING_RULE.match(lines[-1].strip()):
            continue  # a heading and its underline
        if any(not line or line[0].isspace() or HEADING_RULE.match(line.strip()) for line in lines):
            continue
        joined = " ".join(line.strip() for line in lines)
        if len(joined) >= 80 and joined.endswith(".") and _wordy(joined) and not joined.startswith(("*", "-", "Note:")):
            paragraphs.append(joined)
    return paragraphs


def perplexity_passages(chars: int = 1200, min_chars: int = 400) -> list[dict[str, str]]:
    """One passage per topic with enough prose: its first paragraphs, whole, up to `chars` characters."""
    from pydoc_data.topics import topics

    python = platform.python_version()
    rows = []
    for name in sorted(topics):
        text = ""
        for paragraph in prose_paragraphs(topics[name]):
            candidate = f"{text}\n\n{paragraph}" if text else paragraph
            if len(candidate) > chars:
                break
            text = candidate
        if len(text) >= min_chars:
            rows.append({"id": f"pydoc_data.topics[{name!r}] (Python {python})", "text": text})
    return rows


def main() -> None:
    """`python -m servesweep.models.pydoc_corpus --out scenarios/evalsets`"""
    import argparse

    from servesweep.models.stdlib_corpus import write_jsonl

    parser = argparse.ArgumentParser(description="cut the natural-text perplexity set from pydoc_data's topics")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    path = args.out / "pydoc-topics-perplexity.jsonl"
    rows = perplexity_passages()
    digest = write_jsonl(path, rows)
    print(f"{path}: {len(rows)} passages, {sum(len(r['text']) for r in rows):,} characters, sha256 {digest}")


if __name__ == "__main__":
    main()
