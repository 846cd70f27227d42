"""The report's "Repeats and 95 % intervals" section (issue 25): per point run with repeats, the
mean ± half-width of the Student-t interval over its repeats (servesweep.confidence), the
prefix-cache hit rate, and per adaptive search its note (the recommendation's own uncertainty:
servesweep.analysis.uncertainty)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servesweep.confidence import fmt_ci
from servesweep.reports.table import CI_COLUMNS
from servesweep.results.ladder_search import read_ladder_searches
from servesweep.results.points import SweepPoint

REPEATS_HEADER = ["config", "level", "n", *(name for name, _, _ in CI_COLUMNS), "prefix hit %"]


def repeat_rows(points: list[SweepPoint]) -> list[list[str]]:
    rows = []
    for p in points:
        s = p.figures
        for label, metrics in (s.ci95 or {}).items():
            n = max((m.n or 0 for m in metrics.values()), default=0)
            prefix = [v.hit_rate for v in (s.prefix_cache or {}).values() if v.hit_rate is not None]
            hit = f"{100 * sum(prefix) / len(prefix):.1f}" if prefix else "-"
            rows.append([p.config, label, str(n), *(fmt_ci(metrics.get(key), digits) for _, key, digits in CI_COLUMNS),
                         hit])
    return rows


def uncertainty_lines(out_dir: Path) -> list[str]:
    lines = []
    for config, search in read_ladder_searches(out_dir):
        note = search.note()
        flat = search.flat_within_noise()
        if note:
            lines.append(f"{config}: {note}"
                         + (f"; rungs whose gain was inside the noise (taken as flat for the knee): "
                            f"{', '.join(f'{c:g}' for c in flat)}" if flat else ""))
    return lines


def repeats_section(out_dir: Path, points: list[SweepPoint]) -> tuple[list[str], list[list[str]], list[str]]:
    """(markdown lines, table rows, uncertainty lines); empty when nothing ran with repeats."""
    rows = repeat_rows(points)
    if not rows:
        return [], [], []
    lines = uncertainty_lines(out_dir)
    md = ["## Repeats and 95 % intervals", "",
          "Mean ± half-width of a Student-t 95 % interval over each point's repeats (the repeats are the "
          "independent units; requests within one window are not); latencies in ms; prefix hit % is the "
          "server's prefix-cache hit rate averaged over the repeats.", ""]
    return md, rows, lines
