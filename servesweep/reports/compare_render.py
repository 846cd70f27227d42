"""`servesweep compare`'s output: a console table per matched pair, comparison.md and a
self-contained comparison.html, each with the plot of the changes and their intervals."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from servesweep.reports.compare import error_rate_note, pct
from servesweep.results.comparison import Comparison, MetricDelta, PairComparison

_COLOURS = {"better": "green", "worse": "red"}
HEADER = ["metric", "A mean (n)", "B mean (n)", "B - A", "interval of B - A", "verdict"]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _cells(m: MetricDelta) -> list[str]:
    interval = "-" if m.low_pct is None else f"{m.low_pct:+.1f} .. {m.high_pct:+.1f} %"
    change = "-" if m.change_pct is None else f"{m.change_pct:+.1f} %"
    verdict = m.verdict + (" (REGRESSION)" if m.regression else "")
    return [m.name, f"{_num(m.a_mean)} ({len(m.a_values)})", f"{_num(m.b_mean)} ({len(m.b_values)})", change,
            interval, verdict]


def pair_title(pair: PairComparison) -> str:
    return pair.a if pair.a == pair.b else f"{pair.a} (A) vs {pair.b} (B)"


def console_tables(c: Comparison) -> list[Table]:
    tables = []
    for pair in c.pairs:
        table = Table(title=pair_title(pair), box=box.SIMPLE_HEAD, title_justify="left")
        for name in HEADER:
            table.add_column(name, justify="left" if name in ("metric", "verdict") else "right")
        for m in pair.metrics:
            cells = _cells(m)
            colour = _COLOURS.get(m.verdict)
            table.add_row(*cells[:-1], Text(cells[-1], style=colour) if colour else cells[-1])
        tables.append(table)
    return tables


def notes(c: Comparison) -> list[str]:
    metrics = len(c.pairs[0].metrics) if c.pairs else 0
    lines = [f"A = {c.a}, B = {c.b}; B - A relative to A's mean, {pct(c.confidence)} Welch interval over the "
             "repeats; " + error_rate_note(c.confidence, metrics)]
    no_interval = {m.why for p in c.pairs for m in p.metrics if m.verdict == "no interval"}
    lines += sorted(no_interval)
    lines += [f"warning: {w}" for w in c.warnings]
    if c.gate is not None:
        lines.append(f"--fail-on-regression {c.fail_on_regression_pct:g}: {c.gate}: {c.gate_detail}")
    return lines


def plot_png(c: Comparison) -> bytes:
    """The change of each metric (%) with its interval: green better, red worse, grey neither;
    a hollow marker where there is no interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{m.name}" + (f" [{p.b}]" if len(c.pairs) > 1 else ""), m) for p in c.pairs[:6] for m in p.metrics
            if m.change_pct is not None]
    fig, ax = plt.subplots(figsize=(7, 0.32 * max(len(rows), 4) + 1.2))
    for y, (_, m) in enumerate(rows):
        colour = {"better": "tab:green", "worse": "tab:red"}.get(m.verdict, "tab:gray")
        if m.low_pct is None:
            ax.plot([m.change_pct], [y], "o", mfc="none", color=colour)
            continue
        ax.errorbar([m.change_pct], [y], xerr=[[m.change_pct - m.low_pct], [m.high_pct - m.change_pct]],
                    fmt="o", color=colour, capsize=3)
    if c.fail_on_regression_pct:
        for x in (-c.fail_on_regression_pct, c.fail_on_regression_pct):
            ax.axvline(x, color="tab:orange", linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"B - A, % of A's mean ({pct(c.confidence)} Welch interval; green better, red worse)")
    ax.grid(alpha=0.3, axis="x")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown(c: Comparison, plot_name: str = "comparison.png") -> str:
    out = [f"## Comparison: {c.b} against {c.a}", "", f"![changes and their intervals]({plot_name})", ""]
    for pair in c.pairs:
        out += [f"### {pair_title(pair)}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(cell.replace("|", "/") for cell in _cells(m)) + " |" for m in pair.metrics]
        out.append("")
    out += [f"- {line}" for line in notes(c)] + [f"- method: {c.method}", ""]
    return "\n".join(out)


def html_page(c: Comparison, png: bytes) -> str:
    body = [f"<h2>Comparison: {html.escape(c.b)} against {html.escape(c.a)}</h2>",
            f'<img alt="changes and their intervals" src="data:image/png;base64,{base64.b64encode(png).decode()}">']
    for pair in c.pairs:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
        rows = "".join(f'<tr class="{m.verdict.split()[0]}">' + "".join(f"<td>{html.escape(x)}</td>" for x in _cells(m))
                       + "</tr>" for m in pair.metrics)
        body.append(f"<h3>{html.escape(pair_title(pair))}</h3><div class=\"scroll\"><table><thead><tr>{head}</tr>"
                    f"</thead><tbody>{rows}</tbody></table></div>")
    body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in [*notes(c), f"method: {c.method}"])
                + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child,td:last-child{text-align:left}.scroll{overflow-x:auto}"
             "tr.better td:last-child{color:#070}tr.worse td:last-child{color:#b00}img{max-width:100%}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>servesweep compare</title><style>{style}</style>'
            f"</head><body>{''.join(body)}</body></html>")


def write_outputs(c: Comparison, out_dir: Path) -> dict[str, Path]:
    """comparison.md, comparison.html and comparison.png beside comparison.json."""
    png = plot_png(c)
    paths = {"png": out_dir / "comparison.png", "md": out_dir / "comparison.md", "html": out_dir / "comparison.html"}
    paths["png"].write_bytes(png)
    paths["md"].write_text(markdown(c))
    paths["html"].write_text(html_page(c, png))
    return paths
