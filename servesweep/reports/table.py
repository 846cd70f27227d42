"""The summary as a readable table on the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from servesweep.confidence import fmt_ci
from servesweep.console import plain_console
from servesweep.loadgen.records import ERROR_TRUNCATED
from servesweep.loadgen.stats import TRUNCATED_LOUD_FRACTION


def _ms(dist: dict[str, Any], key: str) -> str:
    value = dist.get(key) if dist else None
    if value is None:
        return "-"
    # A tenth of a millisecond matters at 5 ms, not at 5 s: the column stays narrow.
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    cell: Callable[[dict[str, Any]], str | Text]
    essential: bool  # in the default table; the rest with --wide (all are in summary.json and the report)


def _timing_cell(check: dict[str, Any]) -> str | Text:
    """"agrees" only where the client's timings were set against the server's; "n/a" where no rule
    could be applied or the server published no latency histograms (why: timing_notes)."""
    if not check:
        return "n/a"
    if check.get("suspect"):
        return Text("SUSPECT", style="red")
    return "agrees" if server_compared(check) else "n/a"


def server_compared(check: dict[str, Any]) -> bool:
    return any(v is not None for v in (check.get("server_mean_ms") or {}).values())


def _columns(summary: dict[str, Any]) -> list[Column]:
    levels = summary["levels"]
    cols = [
        Column("level", lambda lv: lv["label"], True),
        Column("ok", lambda lv: str(lv["completed"]), True),
        Column("failed", lambda lv: str(lv["failed"]), True),
        Column("req/s", lambda lv: f"{lv['request_throughput']:.2f}", False),
        Column("out tok/s", lambda lv: f"{lv['output_token_throughput']:,.0f}", True),
        Column("TTFT p50", lambda lv: _ms(lv["ttft_ms"], "p50"), True),
        Column("TTFT p99", lambda lv: _ms(lv["ttft_ms"], "p99"), True),
    ]
    # The time to first visible text, where it is not TTFT: some tokens came without text.
    if any(lv.get("tokens_without_text") for lv in levels):
        cols.append(Column("1st text p50", lambda lv: _ms(lv.get("first_text_ms") or {}, "p50"), False))
    cols += [Column("ITL p50", lambda lv: _ms(lv["itl_ms"], "p50"), False),
             Column("ITL p99", lambda lv: _ms(lv["itl_ms"], "p99"), True),
             Column("TPOT p50", lambda lv: _ms(lv["tpot_ms"], "p50"), True),
             Column("E2E p50", lambda lv: _ms(lv["e2e_ms"], "p50"), False),
             Column("E2E p99", lambda lv: _ms(lv["e2e_ms"], "p99"), True)]
    if any("goodput" in lv for lv in levels):
        cols.append(Column("goodput", lambda lv: f"{lv['goodput']['request_goodput']:.2f}" if "goodput" in lv else "-",
                           True))
    if any((lv.get("telemetry") or {}).get("running_batch_mean") is not None for lv in levels):
        cols += [Column("batch mean", lambda lv: _num((lv.get("telemetry") or {}).get("running_batch_mean")), False),
                 Column("KV peak %", lambda lv: _num((lv.get("telemetry") or {}).get("kv_cache_peak_frac"), 100), False)]
    prefix = summary.get("prefix_cache") or {}
    if prefix:
        cols.append(Column("prefix hit %", lambda lv: _prefix_cell(prefix.get(lv["label"])), False))
    if any(lv.get("timing_check") for lv in levels):
        # The server's own means over the level, beside the client's (servesweep.crosscheck).
        cols += [Column("ITL mean client/server", lambda lv: _pair(lv, "itl"), False),
                 Column("E2E mean client/server", lambda lv: _pair(lv, "e2e"), False),
                 Column("TTFT offset", lambda lv: _ms(lv.get("timing_check") or {}, "ttft_offset_ms"), False)]
    cols.append(Column("timing", lambda lv: _timing_cell(lv.get("timing_check") or {}), True))
    return cols


def _num(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.1f}"


def _prefix_cell(pc: dict[str, Any] | None) -> str | Text:
    text = "-" if pc is None else f"{pc['hit_rate'] * 100:.1f}"
    return Text(text, style="yellow") if pc and pc.get("warn") else text


def _pair(lv: dict[str, Any], key: str) -> str:
    check = lv.get("timing_check") or {}
    return f"{_ms(check.get('client_mean_ms') or {}, key)} / {_ms(check.get('server_mean_ms') or {}, key)}"


def compact_table(**kwargs: Any) -> Table:
    """Rows without vertical rules and one space between columns, so the essential columns fit 100
    terminal columns; in a narrower terminal cells wrap (fold), never cut to an ellipsis."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0), **kwargs)


def summary_table(summary: dict[str, Any], title: str | None = None, wide: bool = False) -> Table:
    """The levels of a run: the essential columns (within 100 terminal columns), all with `wide`."""
    table = compact_table(title=title or f"servesweep: {summary['target']['model']} at {summary['target']['url']}")
    cols = [c for c in _columns(summary) if wide or c.essential]
    for c in cols:
        table.add_column(c.name, justify="left" if c.name == "level" else "right", overflow="fold")
    for lv in summary["levels"]:
        table.add_row(*(c.cell(lv) for c in cols))
    has_text = any(c.name == "1st text p50" for c in cols)
    table.caption = ("latencies in ms; TTFT is the first generated token, with or without text"
                     + ("; 1st text is the first visible text" if has_text else "")
                     + "; ITL is every gap between streamed token chunks"
                     + ("" if wide else "; --wide for every column"))
    return table


def timing_notes(summary: dict[str, Any]) -> list[str]:
    """Why a level's timing column says n/a."""
    unchecked = [lv["label"] for lv in summary["levels"] if not lv.get("timing_check")]
    client_only = [lv["label"] for lv in summary["levels"] if lv.get("timing_check")
                   and not lv["timing_check"].get("suspect") and not server_compared(lv["timing_check"])]
    notes = []
    if client_only:
        notes.append(f"timing n/a at {', '.join(client_only)}: the server published no latency histograms, so the "
                     "client's timings were not compared with the server's (the stream's own TPOT and per-token "
                     "decode time agreed)")
    if unchecked:
        notes.append(f"timing n/a at {', '.join(unchecked)}: no cross-check could be made (no server latency "
                     "histograms, no token counts to check the stream against)")
    return notes


CLIENT_DELAY_WARN_MS = 5.0

CI_COLUMNS = (("out tok/s", "output_tok_s", ",.0f"), ("goodput req/s", "goodput", ",.2f"),
              ("TTFT p50", "ttft_ms.p50", ",.1f"), ("TTFT p99", "ttft_ms.p99", ",.1f"),
              ("TPOT p50", "tpot_ms.p50", ",.2f"), ("TPOT p99", "tpot_ms.p99", ",.2f"),
              ("E2E p50", "e2e_ms.p50", ",.1f"), ("E2E p99", "e2e_ms.p99", ",.1f"))


# In the default table: the rest with --wide, and all of them in the report's repeats section.
CI_ESSENTIAL = ("out tok/s", "TTFT p99", "TPOT p50", "E2E p99")


def ci_table(ci95: dict[str, dict[str, Any]], repeats: int, wide: bool = False) -> Table:
    """Per level: mean ± half-width of the 95 % t-interval over the repeats (servesweep.confidence)."""
    table = compact_table(title=f"mean ± 95 % CI over {repeats} repeats (Student-t over the repeats' values)")
    cols = [c for c in CI_COLUMNS if wide or c[0] in CI_ESSENTIAL]
    table.add_column("level", justify="left", overflow="fold")
    table.add_column("n", justify="right", overflow="fold")
    for name, _, _ in cols:
        table.add_column(name, justify="right", overflow="fold")
    for label, metrics in ci95.items():
        n = max((m.get("n", 0) for m in metrics.values()), default=0)
        table.add_row(label, str(n), *(fmt_ci(metrics.get(key), digits) for _, key, digits in cols))
    table.caption = "± is the half-width of the interval; latencies in ms; a wide interval says: repeat more"
    return table


def print_summary(summary: dict[str, Any], console: Console | None = None, notes: Console | None = None,
                  wide: bool = False) -> None:
    """The table on `console` (stdout); errors and early stops on `notes` (stderr). `wide`: every column."""
    console = console or plain_console()
    notes = notes or plain_console(stderr=True)
    console.print(summary_table(summary, wide=wide))
    if summary.get("ci95"):
        console.print(ci_table(summary["ci95"], summary.get("repeats", 0), wide))
    by_turn = summary.get("ttft_by_turn_ms")
    if by_turn:
        turns = compact_table(title="TTFT by turn (ms): the context grows each turn; prefix caching keeps it flat")
        for name in ("turn", "requests", "TTFT p50", "TTFT p90", "TTFT p99"):
            turns.add_column(name, justify="right")
        for turn, dist in by_turn.items():
            turns.add_row(turn, str(dist.get("count", 0)), _ms(dist, "p50"), _ms(dist, "p90"), _ms(dist, "p99"))
        console.print(turns)
    for lv in summary.get("levels", []):
        truncated = (lv.get("errors") or {}).get(ERROR_TRUNCATED, 0)
        finished = lv.get("completed", 0) + lv.get("failed", 0)
        if truncated and truncated >= TRUNCATED_LOUD_FRACTION * finished:
            notes.print(f"level {lv['label']}: {truncated} of {finished} responses TRUNCATED: the server cut them "
                        "short (see records.jsonl: error_kind 'truncated'); this level's throughput is not what "
                        "the server does with the work asked", style="bold red", soft_wrap=True)
    for kind, count in (summary.get("errors") or {}).items():
        example = summary.get("error_examples", {}).get(kind, "")
        notes.print(Text.assemble((f"{count} x {kind}", "red"), f": {example}"), soft_wrap=True)
    if summary.get("abort_reason"):
        notes.print(f"run stopped early: {summary['abort_reason']}", style="yellow", soft_wrap=True)
    without = summary.get("tokens_without_text")
    if without:
        rules = ", ".join(f"{n} by {rule}" for rule, n in (summary.get("token_timing") or {}).items())
        notes.print(f"{without:,} of {summary.get('total_output_tokens', 0):,} output tokens arrived without visible "
                    f"text; TTFT counts them (streams timed: {rules or 'none'})", soft_wrap=True)
    for line in summary.get("warnings") or []:
        notes.print(line, style="yellow", soft_wrap=True)
    for lv in summary.get("levels", []):
        for reason in (lv.get("timing_check") or {}).get("reasons", []):
            notes.print(f"level {lv['label']}: timing suspect: {reason}", style="yellow", soft_wrap=True)
    for line in timing_notes(summary):
        notes.print(line, soft_wrap=True)
    split = summary.get("cpu_split")
    if split:
        notes.print(f"CPU split: {split['note']}", soft_wrap=True)
    delay = (summary.get("client_send_delay_ms") or {}).get("p99")
    if delay is not None and delay > CLIENT_DELAY_WARN_MS:
        notes.print(f"requests waited up to {delay:.1f} ms (p99) inside servesweep before reaching the "
                    "socket: the load generator was short of CPU (many streams, or cores shared with the "
                    "server). Latencies are counted from the socket; --workers N spreads the load.",
                    style="yellow", soft_wrap=True)
