"""What several commands share: the load and target options, the console, starting a server
with progress on stderr, and printing a run's table. Printing only; the work lives below."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from servesweep.backends import (
    BACKENDS,
    DEFAULT_KIND,
    LaunchedServer,
    ServerConfig,
    backend_for,
    config_from_dict,
    launch,
)
from servesweep.auth import ENV_API_KEY
from servesweep.backends import builtin
from servesweep.confidence import parse_precision
from servesweep.errors import (
    EXIT_ALL_FAILED,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_SERVER,
    EXIT_USAGE,
    ConfigError,
    OutputError,
    ServerStartError,
    validation_message,
)
from servesweep.loadgen.arrivals import DEFAULT_NUM_REQUESTS, LoadLevel, default_open_arrival
from servesweep.loadgen.load_runner import ABORT_AUTH
from servesweep.loadgen.sessions import SessionSpec
from servesweep.loadgen.traces import long_replay_note, read_trace
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.workload import Workload
from servesweep.precision import KV_CACHE_DTYPES, PRECISION_NAMES
from servesweep.reports.assertions import Assertion, all_passed, evaluate, result_rows
from servesweep.console import plain_console
from servesweep.reports.table import print_summary
from servesweep.results.assertions import write_assertions

WIDE_COLUMNS = 250  # the --wide table in a file or a CI log
console = plain_console(stderr=True)  # never reads markup: what it prints holds servers' and files' text
T = TypeVar("T")


def from_options(build: Callable[[], T]) -> T:
    """Build a config from command-line values; invalid values are the user's, one line."""
    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None


def number_list(kind: type) -> Any:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None

    return parse


def duration_seconds(text: str) -> float:
    """'60', '60s', '5m' or '1h' as seconds (> 0), for argparse."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    scale = units.get(text.strip()[-1:].lower(), None)
    number = text.strip()[:-1] if scale is not None else text.strip()
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (use e.g. 60, 60s, 5m, 1h)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be > 0")
    return value


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=number_list(int), metavar="N[,N...]",
                      help="closed loop: users in flight; a list runs one level per value")
    mode.add_argument("--request-rate", type=number_list(float), metavar="R[,R...]",
                      help="open loop: requests per second; a list runs one level per value")
    g.add_argument("--arrival", choices=["constant", "poisson", "gamma"], default=None,
                   help="open-loop arrival process (default: poisson, or gamma when --burstiness != 1)")
    g.add_argument("--burstiness", type=float, default=1.0,
                   help="gamma shape; <1 burstier than Poisson, >1 more regular (as vllm bench serve)")
    g.add_argument("--max-concurrency", type=int, default=None, help="open loop: cap on requests in flight")
    bound = g.add_mutually_exclusive_group()
    bound.add_argument("--num-requests", type=int, default=None,
                       help=f"measured requests per level (default {DEFAULT_NUM_REQUESTS}, as in scenarios)")
    bound.add_argument("--duration", type=float, default=None, help="seconds per level")
    g.add_argument("--warmup", type=int, default=0,
                   help="requests per level sent and finished before the measured window (not in statistics)")
    g.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="run each level N times in a row with fresh prompts; the summary and table give the mean "
                        "and a 95 %% Student-t interval over the repeats (README, 'Repeats and confidence intervals')")
    g.add_argument("--target-precision", type=parse_precision, default=None, metavar="P",
                   help="repeat each level (at least twice) until the 95 %% interval of its output tok/s is within "
                        "P of the mean (e.g. 5%%), or --max-repeats is reached")
    g.add_argument("--max-repeats", type=int, default=10, metavar="N",
                   help="the cap on repeats for --target-precision (default 10)")
    g.add_argument("--reset-prefix-cache", action="store_true",
                   help="POST the server's /reset_prefix_cache before each level and repeat (vLLM in dev mode: "
                        "VLLM_SERVER_DEV_MODE=1; loopback targets only); the summary says when it could not")
    g.add_argument("--workers", type=int, default=1,
                   help="load-generator processes; each takes an even share of every level (default 1)")
    t = p.add_argument_group("production-shaped traffic (instead of --concurrency / --request-rate)")
    t.add_argument("--trace", type=Path, default=None, metavar="FILE",
                   help="replay a trace at its offsets and lengths: Mooncake JSONL or Azure CSV")
    t.add_argument("--trace-format", choices=["mooncake", "azure"], default=None, help="default: from the file")
    t.add_argument("--trace-speed", type=float, default=1.0, help="2 replays twice as fast")
    t.add_argument("--sessions", type=int, default=None, metavar="N", help="N concurrent multi-turn chat sessions")
    t.add_argument("--turns", type=int, default=4, help="turns per session")
    t.add_argument("--user-len", default="64", metavar="SPEC", help="tokens of each new user message")
    t.add_argument("--think-time", default="0", metavar="SPEC", help="seconds between an answer and the next turn")
    add_workload_options(p)
    add_slo_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None, help="results directory (default: results/<time>)")
    o.add_argument("--no-progress", action="store_true")
    add_wide_option(o)
    o.add_argument("--keep-text", action="store_true", help="store generated text in the records")
    o.add_argument("--records", choices=["full", "requests", "none"], default="full",
                   help="how much records.jsonl keeps: full (with chunk times, ~0.75 KB a 64-token request), "
                        "requests (without chunk times, ~0.4 KB), none (no file; the summary is complete anyway)")
    o.add_argument("--report-interval", type=duration_seconds, default=None, metavar="SECONDS",
                   help="soak runs: a summary per interval (e.g. 60, 60s, 5m) in intervals.jsonl as the run goes, "
                        "a plot, and a drift verdict between the first and last intervals")
    o.add_argument("--allow-remote", action="store_true", help="allow a target that is not a loopback address")
    o.add_argument("--assert", dest="assertions", action="append", default=[], metavar="EXPR",
                   help="CI threshold checked per level after the run, e.g. 'ttft_ms.p99<500', 'failed==0' "
                        "(repeatable; exit 1 when one fails)")


def add_wide_option(p: Any) -> None:
    p.add_argument("--wide", action="store_true",
                   help="every column in the results table (default: the essential ones, within 100 columns; "
                        "summary.json and the report have them all)")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    """What each request asks for (read back by `workload_from_args`)."""
    w = p.add_argument_group("workload")
    w.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    w.add_argument("--no-stream", action="store_true", help="non-streaming requests (TTFT = e2e)")
    w.add_argument("--input-len", default="128", metavar="SPEC",
                   help="N, uniform:LOW:HIGH, normal:MEAN:STD or lognormal:MEDIAN:SIGMA (tokens)")
    w.add_argument("--output-len", default="64", metavar="SPEC", help="as --input-len")
    w.add_argument("--dataset", type=Path, default=None, help="JSONL prompts (ShareGPT accepted)")
    w.add_argument("--shared-prefix-len", type=int, default=0, help="tokens of common prefix (system prompt)")
    w.add_argument("--no-ignore-eos", action="store_true", help="let the model stop early at EOS")
    w.add_argument("--no-chunk-usage", action="store_true",
                   help="do not ask for usage beside every streamed chunk (continuous_usage_stats): for servers "
                        "that refuse it; tokens per chunk then come from the per-endpoint chunk rule")
    w.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    w.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                   help="a stream that has begun and then sends nothing for S seconds fails as a stall (default 60)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--tokenizer", type=Path, default=None, help="model directory holding tokenizer.json")


def add_slo_options(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("SLOs for goodput (ms)")
    s.add_argument("--slo-ttft-ms", type=float, default=None)
    s.add_argument("--slo-tpot-ms", type=float, default=None)
    s.add_argument("--slo-e2e-ms", type=float, default=None)


def add_auth_options(group: Any) -> None:
    """The credentials every request to the server carries (servesweep.auth; main() reads them)."""
    group.add_argument("--api-key", default=None, metavar="KEY",
                       help=f"sent as 'Authorization: Bearer KEY' on every request (default: ${ENV_API_KEY}; "
                            "the variable keeps the key out of the process list). Never written anywhere")
    group.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="an extra header on every request, e.g. a gateway's key (repeatable); values are "
                            "never written anywhere")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("target")
    b.add_argument("--url", default=None, help="attach to a running OpenAI-compatible server")
    add_auth_options(b)
    b.add_argument("--backend", choices=sorted(BACKENDS), default=None,
                   help="launch this server for the run (default without --url: the built-in CPU vLLM)")
    b.add_argument("--model", default=None,
                   help="with --url: served model name (default: the first in /v1/models); "
                        "with --backend: model directory")
    b.add_argument("--precision", choices=PRECISION_NAMES, default="bf16")
    b.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto")
    b.add_argument("--max-num-seqs", "--max-batch-size", dest="max_batch_size", type=int, default=None,
                   help="largest running batch (vLLM --max-num-seqs, TensorRT-LLM --max_batch_size)")
    b.add_argument("--max-num-batched-tokens", "--max-num-tokens", dest="max_num_tokens", type=int, default=None)
    b.add_argument("--gpu-memory-utilization", "--memory-fraction", dest="memory_fraction", type=float, default=None,
                   help="vLLM --gpu-memory-utilization, TensorRT-LLM --kv_cache_free_gpu_memory_fraction")
    b.add_argument("--kv-cache-memory-bytes", type=int, default=None, help="an exact KV-cache budget")
    b.add_argument("--max-model-len", type=int, default=None)
    b.add_argument("--tensor-parallel-size", type=int, default=1)
    b.add_argument("--load-format", choices=["auto", "dummy"], default=None, help="vLLM only")
    b.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for /health")
    b.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed verbatim to the server (repeatable)")


def default_out_dir(label: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{label}"


def builtin_server_config(**overrides: Any) -> ServerConfig:
    """The built-in target (servesweep.backends.builtin), an invalid override as a ConfigError."""
    return from_options(lambda: builtin.builtin_server_config(**overrides))


def dummy_weights_option(load_format: str | None) -> bool | None:
    """`--load-format dummy|auto` (vLLM's spelling, kept for its users) as dummy_weights."""
    return None if load_format is None else load_format == "dummy"


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    overrides = dict(
        kind=args.backend or DEFAULT_KIND, precision=args.precision, kv_cache_dtype=args.kv_cache_dtype,
        max_batch_size=args.max_batch_size, max_num_tokens=args.max_num_tokens,
        memory_fraction=args.memory_fraction, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
        max_model_len=args.max_model_len, tensor_parallel_size=args.tensor_parallel_size,
        dummy_weights=dummy_weights_option(args.load_format), startup_timeout_s=args.startup_timeout,
        extra_args=args.server_arg,
    )
    if args.model is None:
        if args.backend not in (None, DEFAULT_KIND):
            raise ConfigError(f"--backend {args.backend} needs --model DIR")
        return builtin_server_config(**overrides)
    values = {k: v for k, v in overrides.items() if v is not None}
    if not backend_for(values["kind"]).config_class.dummy_weights_supported:
        values.pop("dummy_weights", None)  # --load-format is vLLM's option; other servers ignore it
    return from_options(lambda: config_from_dict({"model": args.model, **values}))


def sessions_from_args(args: argparse.Namespace) -> SessionSpec | None:
    if args.sessions is None:
        return None
    return from_options(lambda: SessionSpec(sessions=args.sessions, turns=args.turns, user_len=args.user_len,
                                            output_len=args.output_len, think_time_s=args.think_time,
                                            seed=args.seed))


def levels_from_args(args: argparse.Namespace) -> list[LoadLevel]:
    if args.trace is not None or args.sessions is not None:
        if args.concurrency or args.request_rate:
            raise ConfigError("--trace and --sessions set their own load: drop --concurrency / --request-rate")
        if args.trace is not None and args.sessions is not None:
            raise ConfigError("give --trace or --sessions, not both")
    if args.trace is not None:
        trace = read_trace(args.trace, args.trace_format, args.trace_speed)
        note = long_replay_note(trace)
        if note:
            console.print(f"trace {args.trace}: {note}", style="yellow", soft_wrap=True)
        span = trace[-1].offset_s if len(trace) > 1 else 1.0
        return from_options(lambda: [LoadLevel(request_rate=len(trace) / max(span, 1e-3), arrival="trace",
                                               num_requests=len(trace), name="trace")])
    if args.sessions is not None:
        return from_options(lambda: [LoadLevel(concurrency=args.sessions, arrival="sessions",
                                               num_requests=args.sessions * args.turns, name="sessions")])
    if args.num_requests is None and args.duration is None:
        args.num_requests = DEFAULT_NUM_REQUESTS
    common = dict(num_requests=args.num_requests, duration_s=args.duration, warmup_requests=args.warmup)
    if args.request_rate:
        arrival = args.arrival or default_open_arrival(args.burstiness)
        return from_options(lambda: [LoadLevel(request_rate=r, arrival=arrival, burstiness=args.burstiness,
                                               max_concurrency=args.max_concurrency, **common)
                                     for r in args.request_rate])
    return from_options(lambda: [LoadLevel(concurrency=c, **common) for c in (args.concurrency or [1])])


def workload_from_args(args: argparse.Namespace) -> Workload:
    return from_options(lambda: Workload(
        endpoint="chat" if getattr(args, "sessions", None) is not None else args.endpoint, stream=not args.no_stream, input_len=args.input_len,
        output_len=args.output_len, dataset=args.dataset, shared_prefix_len=args.shared_prefix_len,
        ignore_eos=not args.no_ignore_eos, request_timeout_s=args.timeout, seed=args.seed,
        stall_timeout_s=args.stall_timeout,
        chunk_usage=not getattr(args, "no_chunk_usage", False),
    ))


def slo_from_args(args: argparse.Namespace) -> SLO | None:
    slo = SLO(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms, e2e_ms=args.slo_e2e_ms)
    return None if slo.is_empty() else slo


def start_server(config: ServerConfig, out: Path) -> LaunchedServer:
    """Launch with progress on stderr; a start-up failure shows the log tail, then raises."""
    name = BACKENDS[config.kind].display_name
    last = [0.0]

    def tick(elapsed: float) -> None:
        if elapsed - last[0] >= 15:
            last[0] = elapsed
            console.print(f"  ... waiting for {name} to become healthy ({elapsed:.0f} s)")

    console.print(f"starting {name} ({config.label()}) for {config.model}; log: {out}/server-{config.label()}.log")
    try:
        server = launch(config, out, on_wait=tick)
    except ServerStartError as exc:
        tail = "\n".join(exc.log_tail.splitlines()[-15:])
        if tail:
            console.print(tail, style="dim")
        raise ServerStartError(exc.cause, f"{name} did not start: {exc.detail}") from None
    console.print(f"{name} {server.version or ''} healthy at {server.base_url} after {server.startup_s:.0f} s; "
                  f"KV pool: {server.kv_pool.get('tokens')} tokens")
    split = server.info().get("cpu_split")
    if split:
        console.print(f"CPU split: {split['note']}")
    return server


def stdout_console(wide: bool = False) -> Console:
    """The terminal's width; in a file or a CI log 100 columns (the default tables fit), or enough
    for every column with --wide."""
    return plain_console() if sys.stdout.isatty() else plain_console(width=WIDE_COLUMNS if wide else 100)


def check_assertions(assertions: list[Assertion], levels: list[tuple[str, dict[str, Any]]], out: Path) -> bool:
    """Evaluate CI thresholds, print the pass/fail table, keep it in `out/assertions.json`."""
    results = evaluate(assertions, levels)
    header, rows = result_rows(results)
    table = Table(title="assertions")
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*row, style=None if row[-1] == "PASS" else "red")
    stdout_console().print(table)
    passed = all_passed(results)
    write_assertions(out, passed, header, rows)
    return passed


def finish_run(summary: dict[str, Any], out: Path, assertions: list[Assertion] | None = None,
               wide: bool = False) -> int:
    """Print the table and return the run's exit code (README, "Exit codes"): 130 interrupted, 5 results
    not (all) written, 3 the server failed, 4 every measured request failed, 1 a check failed, 0."""
    print_summary(summary, stdout_console(wide), console, wide)
    keep = summary.get("records", {}).get("keep", "full")
    files = [f"{out}/summary.json"] + ([f"{out}/records.jsonl"] if keep != "none" else [])
    soak = summary.get("soak")
    if soak:
        files.append(f"{out}/intervals.jsonl")
        why = "; ".join(why for lv in soak["levels"].values() for why in lv.get("why", []))
        console.print(f"soak: {soak['intervals']} intervals of {soak['interval_s']:g} s, drift between the first "
                      f"and last full interval: {soak['verdict']}" + (f" ({why})" if why else ""), soft_wrap=True)
    output_error = summary.get("output_error")
    if output_error:
        where = summary.get("summary_path", f"{out}/summary.json")
        console.print(f"results could not all be written: {output_error}; the summary is in "
                      + (where if where else "no file (nowhere would take it)"), style="red", soft_wrap=True)
    else:
        console.print(f"results: {', '.join(files)}", soft_wrap=True)
    checks_ok = True
    if assertions:
        try:
            checks_ok = check_assertions(assertions, [(lv["label"], lv) for lv in summary.get("levels", [])], out)
        except OutputError as exc:
            if not output_error:
                raise
            console.print(f"assertions not kept: {exc}", style="red", soft_wrap=True)
            checks_ok = False
    if summary.get("interrupted"):
        return EXIT_INTERRUPTED
    if summary.get("abort_kind") == ABORT_AUTH:
        console.print(f"run aborted: {summary['abort_reason']}", style="red", soft_wrap=True)
        return EXIT_USAGE
    if summary.get("abort_kind") == "output" or output_error:
        if summary.get("abort_reason"):
            console.print(f"run aborted: {summary['abort_reason']}", style="red", soft_wrap=True)
        return EXIT_OUTPUT
    if summary.get("abort_reason"):
        console.print(f"run aborted: {summary['abort_reason']}", style="red", soft_wrap=True)
        return EXIT_SERVER
    if summary.get("completed", 0) == 0 and summary.get("failed", 0) > 0:
        console.print("every measured request failed", style="red")
        return EXIT_ALL_FAILED
    return EXIT_OK if checks_ok else EXIT_CHECK_FAILED
