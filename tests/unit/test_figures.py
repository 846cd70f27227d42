"""Every measured figure quoted in README.md and docs/*.md against the committed raw file it comes
from (the registry docs/figures.yaml, issue 36).

A registry entry names a figure by its text, the raw file (JSON or JSONL, committed under examples/
or bench/results/) and a Python expression over that file's content `d`, formatted with `fmt`; the
formatted value must be the text, and the text must be quoted somewhere in README.md or a docs/*.md
page (so a figure moved between pages still passes, a figure changed or dropped without its entry
does not). Figures are found by their text, never by line numbers.

Coverage: the sections the registry lists (by heading) are scanned for numbers; a number that is
neither part of a registered figure nor of a listed setting (`settings`: workload sizes, SLOs,
commands) counts as unregistered, and a section may not hold more than the registry's
`unregistered` allowance for it (the figures still to be traced, which only goes down)."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "docs" / "figures.yaml"
RAW_SUFFIXES = (".json", ".jsonl")


def _pages() -> dict[str, str]:
    pages = {"README.md": (ROOT / "README.md").read_text()}
    pages.update({str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))})
    return pages


def _registry() -> dict[str, Any]:
    return yaml.safe_load(REGISTRY.read_text())


def _load(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


# --- helpers the registry's expressions may use ----------------------------------------------------
def point(points: list[dict[str, Any]], config: str, level: str) -> dict[str, Any]:
    """The sweep point of `config` at `level` (points.jsonl)."""
    found = [p for p in points if p.get("config") == config and p.get("level") == level]
    assert len(found) == 1, f"{len(found)} points of {config} at {level}"
    return found[0]


def one(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one item of `items` whose fields have the given values."""
    found = [i for i in items if all(i.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} items match {match}"
    return found[0]


def ci(p: dict[str, Any], metric: str = "output_tok_s") -> tuple[float, float]:
    """(mean, half-width) of a point's 95 % interval over its repeats (summary.json's ci95)."""
    (entry,) = p["summary"]["ci95"].values()
    return entry[metric]["mean"], (entry[metric]["high"] - entry[metric]["low"]) / 2


def sig3(x: float) -> str:
    """Three significant digits, trailing zeros kept (4.90, 12.6, 10.0)."""
    return f"{x:#.3g}".rstrip(".")


HELPERS = {"point": point, "one": one, "ci": ci, "sig3": sig3, "max": max, "min": min, "sum": sum, "len": len,
           "round": round, "abs": abs, "sorted": sorted, "tuple": tuple, "list": list, "set": set, "any": any,
           "all": all, "next": next, "zip": zip, "median": statistics.median}


def _figures() -> list[tuple[str, dict[str, Any]]]:
    """(file, figure) pairs; a source with `files:` (several runs behind one figure) gives them
    joined by " + ", and its expression sees `d` as the list of their contents, in order."""
    out = []
    for source in _registry()["sources"]:
        file = source.get("file") or " + ".join(source["files"])
        for fig in source["figures"]:
            out.append((file, {**{k: v for k, v in source.items() if k not in ("file", "files", "figures")}, **fig}))
    return out


FIGURES = _figures()


def render(file: str, fig: dict[str, Any]) -> str:
    """The figure as its raw file gives it."""
    files = file.split(" + ")
    data = _load(ROOT / file) if len(files) == 1 else [_load(ROOT / f) for f in files]
    names = {k: v for k, v in fig.items() if k not in ("text", "value", "fmt", "at")}
    if "at" in fig:  # "CONFIG LEVEL": that sweep point as p, its summary as s
        names["p"] = point(data, *fig["at"].split())
        names["s"] = names["p"]["summary"]
    # One namespace, as globals: comprehensions in an expression see it too.
    value = eval(fig["value"], {"__builtins__": {}, **HELPERS, **names, "d": data})  # noqa: S307 (our own file)
    values = value if isinstance(value, tuple) else (value,)
    return fig.get("fmt", "{}").format(*values)


@pytest.mark.parametrize("file,fig", FIGURES, ids=[f"{f}: {g['text']}" for f, g in FIGURES])
def test_a_quoted_figure_is_what_its_committed_file_gives(file, fig):
    for f in file.split(" + "):
        assert f.endswith(RAW_SUFFIXES) and f.startswith(("examples/", "bench/results/")), \
            f"{f}: a figure comes from a committed raw result (JSON/JSONL under examples/ or bench/results/)"
        assert (ROOT / f).is_file(), f"{f} is not in the repository"
    assert any(fig["text"] in text for text in _pages().values()), f"{fig['text']!r} is quoted nowhere"
    assert render(file, fig) == fig["text"]


def _sections(pages: dict[str, str], heading: str) -> str:
    """The text under `heading` (a Markdown heading's title) up to the next heading of its level or above."""
    for text in pages.values():
        m = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
        if m:
            level = len(m.group(1))
            end = re.search(rf"^#{{1,{level}}} ", text[m.end():], re.M)
            return text[m.end(): m.end() + end.start() if end else len(text)]
    raise AssertionError(f"no heading {heading!r} in README.md or docs/*.md")


def unregistered_numbers(section: str, figures: list[str], settings: list[str]) -> list[str]:
    """The numbers in `section` that belong to no registered figure and no listed setting."""
    text = section
    for phrase in sorted(set(figures) | set(settings), key=len, reverse=True):
        text = text.replace(phrase, " ")
    text = re.sub(r"`[^`]*`", " ", text)  # commands, file names, identifiers
    text = re.sub(r"\(?https?://\S+", " ", text)
    text = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", " ", text)  # dates
    text = re.sub(r"[A-Za-z_][\w./-]*\d[\w./-]*", " ", text)  # c16, H200, fp8, p99, Llama-3-8B
    return re.findall(r"\d[\d,]*(?:\.\d+)?", text)


def test_no_section_holds_more_unregistered_figures_than_its_allowance():
    reg = _registry()
    pages = _pages()
    figures = [fig["text"] for _, fig in FIGURES]
    over = {}
    for heading, allowance in reg["unregistered"].items():
        found = unregistered_numbers(_sections(pages, heading), figures, reg.get("settings", []))
        if len(found) > allowance:
            over[heading] = (len(found), allowance, found)
    assert not over, "figures with no registry entry (add one to docs/figures.yaml): " + "; ".join(
        f"{h}: {n} > {a}: {f}" for h, (n, a, f) in over.items())


def test_every_listed_setting_is_quoted():
    pages = "\n".join(_pages().values())
    assert [s for s in _registry().get("settings", []) if s not in pages] == []


def test_the_coverage_scan_finds_a_figure_that_has_no_entry():
    section = "Measured: 1,234 req/s (`--concurrency 16`, 2026-12-02, c16 on an H200) and 5.6 ms."
    assert unregistered_numbers(section, ["5.6 ms"], []) == ["1,234"]


def test_a_figure_that_disagrees_with_its_file_fails(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text(json.dumps({"tok_s": 1234.4}))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert render("r.json", {"text": "1,234", "value": "d['tok_s']", "fmt": "{:,.0f}"}) == "1,234"
    assert render("r.json", {"text": "1,235", "value": "d['tok_s']", "fmt": "{:,.0f}"}) != "1,235"
