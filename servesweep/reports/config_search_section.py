"""The report's "Config search" section (issue 26): from search.json, how many configurations
were started against the grid's size, the best, why the search stopped, every start with why it
was chosen, and every configuration not started with the rule that ruled it out."""

from __future__ import annotations

import html
from pathlib import Path

from servesweep.results.config_search_record import ConfigSearchRecord, read_search_record

STEPS_HEADER = ["#", "config", "why started", "goodput (req/s) at", "verdict"]
SKIPPED_HEADER = ["config", "rule", "why not started"]


def _summary(rec: ConfigSearchRecord) -> list[str]:
    lines = [f"{rec.starts} of {rec.grid_size} configurations started "
             f"({', '.join(f'{a.knob or a.name} ({a.kind}): {a.values}' for a in rec.axes)}); "
             f"stopped: {rec.stop_reason or 'still running'} ({rec.stop_detail or '-'}); wall {rec.wall_s:,.0f} s."]
    if rec.best is not None:
        ci = f" ± {rec.best.goodput_ci95_half:.3g}" if rec.best.goodput_ci95_half is not None else ""
        lines.append(f"Best: **{rec.best.config}**, {rec.best.goodput:.3g}{ci} req/s goodput at {rec.best.level}.")
        if rec.anchor and rec.anchor != rec.best.config:
            lines.append(f"The search's moves went from {rec.anchor}, the best beyond the noise; {rec.best.config} "
                         "reads higher, within the noise of it.")
    else:
        lines.append(f"**No best configuration**: {rec.no_best or 'the search has not finished'}.")
    lines.append(f"Objective: {rec.objective}. Noise: {rec.noise_rule} (noise_floor {rec.noise_floor:g}).")
    return lines


def _rows(rec: ConfigSearchRecord) -> tuple[list[list[str]], list[list[str]]]:
    steps = []
    for s in rec.steps:
        m = s.measured
        got = "-" if m is None or m.goodput is None else f"{m.goodput:.3g} at {m.level}"
        if m is not None and m.failed and m.goodput is None:
            got = f"failed: {m.failed}"
        steps.append([str(s.n), s.config + (" (resumed)" if s.resumed else ""), s.why, got, s.verdict or ""])
    skipped = [[s.config, s.rule, s.why] for s in rec.skipped]
    return steps, skipped


def config_search_section(out_dir: Path) -> tuple[list[str], str]:
    """(Markdown lines, HTML) of the section; empty when the sweep ran its whole grid."""
    rec = read_search_record(out_dir)
    if rec is None:
        return [], ""
    steps, skipped = _rows(rec)

    def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "/") for c in r] for r in rows]
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                *("| " + " | ".join(r) + " |" for r in esc)]

    def html_table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    summary = _summary(rec)
    md = ["## Config search", "", *[f"- {line}" for line in summary], "", "Started:", "",
          *md_table(STEPS_HEADER, steps), "", "Not started:", "", *md_table(SKIPPED_HEADER, skipped), ""]
    items = "".join(f"<li>{html.escape(line).replace('**', '')}</li>" for line in summary)
    page = (f"<h2>Config search</h2><ul>{items}"
            + "</ul><p>Started:</p>" + html_table(STEPS_HEADER, steps) + "<p>Not started:</p>"
            + html_table(SKIPPED_HEADER, skipped))
    return md, page
