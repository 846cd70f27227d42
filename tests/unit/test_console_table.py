"""The results table on the terminal: the essential columns fit 100 columns (no cell wraps), every
column with --wide, nothing cut to an ellipsis in 80; "agrees" only where the server's timings
were compared."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from servesweep.reports.table import print_summary, summary_table, timing_notes

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "examples" / "h200-2026-12-02" / "sweep" / "configs" / "bf16-seqs512" / "c128" / "summary.json"


def _worst_case() -> dict:
    """The committed H200 c128 summary (server histograms, goodput, telemetry, tokens without text),
    with levels whose figures take the most characters a column is likely to meet."""
    summary = json.loads(COMMITTED.read_text())
    base = summary["levels"][0]
    big = copy.deepcopy(base)
    big.update(label="c1024#r10", completed=100000, failed=10000, request_throughput=1234.56,
               output_token_throughput=123456.7, goodput={"request_goodput": 1234.56})
    for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "first_text_ms"):
        big[metric] = {q: 123456.7 for q in ("mean", "p50", "p90", "p99")}
    client_only = copy.deepcopy(base)
    client_only["label"] = "c1"
    client_only["timing_check"] = {**base["timing_check"], "server_mean_ms": {"ttft": None, "itl": None, "e2e": None},
                                   "suspect": False, "reasons": []}
    unchecked = copy.deepcopy(base)
    unchecked.update(label="c8", timing_check=None)
    agrees = copy.deepcopy(base)
    agrees["label"] = "c16"
    agrees["timing_check"] = {**base["timing_check"], "suspect": False, "reasons": []}
    summary["levels"] = [big, client_only, unchecked, agrees, base]
    summary["prefix_cache"] = {lv["label"]: {"hit_rate": 0.0} for lv in summary["levels"]}
    return summary


def _render(summary: dict, width: int, wide: bool = False) -> list[str]:
    console = Console(width=width, file=io.StringIO(), markup=False, color_system=None)
    console.print(summary_table(summary, wide=wide))
    return console.file.getvalue().splitlines()


def _body(lines: list[str]) -> tuple[list[str], list[str]]:
    """(header lines, row lines): between the title and the rule, and after the rule until the caption."""
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    rows = lines[rule + 1:]
    caption = next(i for i, line in enumerate(rows) if "latencies in ms" in line)
    return lines[1:rule], rows[:caption]


@pytest.mark.parametrize("width", [100, 200])
def test_the_default_table_fits_without_wrapping_a_cell(width):
    summary = _worst_case()
    lines = _render(summary, width)
    header, rows = _body(lines)
    assert len(header) == 1, header  # no header cell wrapped
    assert len(rows) == len(summary["levels"]), rows  # one line per level: no cell wrapped
    assert max(len(line) for line in lines) <= 100
    assert [row.split()[0] for row in rows] == [lv["label"] for lv in summary["levels"]]


def test_at_80_columns_cells_wrap_but_nothing_is_cut():
    lines = _render(_worst_case(), 80)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "…" not in text  # folded onto a second line where a figure is too long, never cut
    _, rows = _body(lines)
    ordinary = [row for row in rows if row.split()[0] in ("c1", "c8", "c16", "c128")]
    assert len(ordinary) == 4 and all("5,449" in row and "1,796" in row for row in ordinary)
    assert "agrees" in text and "100000" in text and "1234.56" in text


def test_wide_has_every_column():
    summary = _worst_case()
    header, rows = _body(_render(summary, 400, wide=True))
    for name in ("req/s", "1st text p50", "ITL p50", "E2E p50", "batch mean", "KV peak %", "prefix hit %",
                 "ITL mean client/server", "E2E mean client/server", "TTFT offset"):
        assert name in header[0], name
    assert len(rows) == len(summary["levels"])
    default_header = _body(_render(summary, 400))[0][0]
    assert "batch mean" not in default_header and "req/s" not in default_header


def test_timing_says_agrees_only_where_the_servers_timings_were_compared():
    summary = _worst_case()
    _, rows = _body(_render(summary, 200))
    timing = {row.split()[0]: row.split()[-1] for row in rows}
    assert timing == {"c1024#r10": "SUSPECT", "c1": "n/a", "c8": "n/a", "c16": "agrees", "c128": "SUSPECT"}
    notes = timing_notes(summary)
    assert any(n.startswith("timing n/a at c1:") and "no latency histograms" in n for n in notes)
    assert any(n.startswith("timing n/a at c8:") for n in notes)


def test_print_summary_says_why_timing_is_na():
    summary = _worst_case()
    out, err = io.StringIO(), io.StringIO()
    print_summary(summary, Console(file=out, width=100, markup=False), Console(file=err, width=100, markup=False))
    assert "timing n/a at c1:" in err.getvalue()
    assert max(len(line) for line in out.getvalue().splitlines()) <= 100
