"""The summary as a readable table on the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from servesweep.confidence import fmt_ci
from servesweep.loadgen.records import ERROR_TRUNCATED
from servesweep.loadgen.stats import TRUNCATED_LOUD_FRACTION


def plain_console(**kwargs: Any) -> Console:
    """A console that never reads rich markup. Every console servesweep prints on is one: what it
    prints holds text from servers (error messages, model names) and files (paths, scenario names),
    and a `[/INST]` in it must print as itself rather than crash the end of a run with a
    MarkupError (or a tag that looks like one vanish). Colour comes from `style=` and
    `rich.text.Text` instead."""
    return Console(markup=False, **kwargs)


def _ms(dist: dict[str, Any], key: str) -> str:
    value = dist.get(key) if dist else None
    return "-" if value is None else f"{value:,.1f}"


def summary_table(summary: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title or f"servesweep: {summary['target']['model']} at {summary['target']['url']}")
    columns = ["level", "ok", "failed", "req/s", "out tok/s", "TTFT p50", "TTFT p99",
               "ITL p50", "ITL p99", "TPOT p50", "E2E p50", "E2E p99"]
    # The time to first visible text, where it is not TTFT: some tokens came without text.
    has_text = any(lv.get("tokens_without_text") for lv in summary["levels"])
    if has_text:
        columns.insert(columns.index("TTFT p99") + 1, "1st text p50")
    has_goodput = any("goodput" in lv for lv in summary["levels"])
    has_batch = any(lv.get("telemetry", {}).get("running_batch_mean") is not None for lv in summary["levels"])
    has_check = any(lv.get("timing_check") for lv in summary["levels"])
    prefix = summary.get("prefix_cache") or {}
    if has_goodput:
        columns.append("goodput req/s")
    if has_batch:
        columns += ["batch mean", "KV peak %"]
    if prefix:
        columns.append("prefix hit %")
    if has_check:
        # The server's own means over the level, beside the client's (servesweep.crosscheck).
        columns += ["ITL mean client/server", "E2E mean client/server", "TTFT offset", "timing"]
    for name in columns:
        table.add_column(name, justify="left" if name == "level" else "right")
    for lv in summary["levels"]:
        row = [
            lv["label"], str(lv["completed"]), str(lv["failed"]),
            f"{lv['request_throughput']:.2f}", f"{lv['output_token_throughput']:,.0f}",
            _ms(lv["ttft_ms"], "p50"), _ms(lv["ttft_ms"], "p99"),
            *([_ms(lv.get("first_text_ms") or {}, "p50")] if has_text else []),
            _ms(lv["itl_ms"], "p50"), _ms(lv["itl_ms"], "p99"),
            _ms(lv["tpot_ms"], "p50"), _ms(lv["e2e_ms"], "p50"), _ms(lv["e2e_ms"], "p99"),
        ]
        if has_goodput:
            row.append(f"{lv['goodput']['request_goodput']:.2f}" if "goodput" in lv else "-")
        if has_batch:
            tel = lv.get("telemetry", {})
            mean, kv = tel.get("running_batch_mean"), tel.get("kv_cache_peak_frac")
            row.append("-" if mean is None else f"{mean:.1f}")
            row.append("-" if kv is None else f"{kv * 100:.1f}")
        if prefix:
            pc = prefix.get(lv["label"])
            text = "-" if pc is None else f"{pc['hit_rate'] * 100:.1f}"
            row.append(Text(text, style="yellow") if pc and pc.get("warn") else text)
        if has_check:
            check = lv.get("timing_check") or {}
            c, sv = check.get("client_mean_ms") or {}, check.get("server_mean_ms") or {}
            row += [f"{_ms(c, 'itl')} / {_ms(sv, 'itl')}", f"{_ms(c, 'e2e')} / {_ms(sv, 'e2e')}",
                    _ms(check, "ttft_offset_ms"),
                    "-" if not check else (Text("SUSPECT", style="red") if check.get("suspect") else "agrees")]
        table.add_row(*row)
    table.caption = ("latencies in ms; TTFT is the first generated token, with or without text"
                     + ("; 1st text is the first visible text" if has_text else "")
                     + "; ITL is every gap between streamed token chunks")
    return table


CLIENT_DELAY_WARN_MS = 5.0

CI_COLUMNS = (("out tok/s", "output_tok_s", ",.0f"), ("goodput req/s", "goodput", ",.2f"),
              ("TTFT p50", "ttft_ms.p50", ",.1f"), ("TTFT p99", "ttft_ms.p99", ",.1f"),
              ("TPOT p50", "tpot_ms.p50", ",.2f"), ("TPOT p99", "tpot_ms.p99", ",.2f"),
              ("E2E p50", "e2e_ms.p50", ",.1f"), ("E2E p99", "e2e_ms.p99", ",.1f"))


def ci_table(ci95: dict[str, dict[str, Any]], repeats: int) -> Table:
    """Per level: mean ± half-width of the 95 % t-interval over the repeats (servesweep.confidence)."""
    table = Table(title=f"mean ± 95 % CI over {repeats} repeats (Student-t over the repeats' values)")
    table.add_column("level", justify="left")
    table.add_column("n", justify="right")
    for name, _, _ in CI_COLUMNS:
        table.add_column(name, justify="right")
    for label, metrics in ci95.items():
        n = max((m.get("n", 0) for m in metrics.values()), default=0)
        table.add_row(label, str(n), *(fmt_ci(metrics.get(key), digits) for _, key, digits in CI_COLUMNS))
    table.caption = "± is the half-width of the interval; latencies in ms; a wide interval says: repeat more"
    return table


def print_summary(summary: dict[str, Any], console: Console | None = None, notes: Console | None = None) -> None:
    """The table on `console` (stdout); errors and early stops on `notes` (stderr)."""
    console = console or plain_console()
    notes = notes or plain_console(stderr=True)
    console.print(summary_table(summary))
    if summary.get("ci95"):
        console.print(ci_table(summary["ci95"], summary.get("repeats", 0)))
    by_turn = summary.get("ttft_by_turn_ms")
    if by_turn:
        turns = Table(title="TTFT by turn (ms): the context grows each turn; prefix caching keeps it flat")
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
    split = summary.get("cpu_split")
    if split:
        notes.print(f"CPU split: {split['note']}", soft_wrap=True)
    delay = (summary.get("client_send_delay_ms") or {}).get("p99")
    if delay is not None and delay > CLIENT_DELAY_WARN_MS:
        notes.print(f"requests waited up to {delay:.1f} ms (p99) inside servesweep before reaching the "
                    "socket: the load generator was short of CPU (many streams, or cores shared with the "
                    "server). Latencies are counted from the socket; --workers N spreads the load.",
                    style="yellow", soft_wrap=True)
