"""`servesweep run`: one load test against a URL, a launched server, or the built-in CPU vLLM."""

from __future__ import annotations

import argparse
from typing import Any

from pathlib import Path

from servesweep.backends import Telemetry
from servesweep.backends.detect import detect_metrics
from servesweep.backends.telemetry import TelemetrySampler
from servesweep.cli.common import (
    add_backend_options,
    console,
    add_load_options,
    default_out_dir,
    finish_run,
    levels_from_args,
    server_config_from_args,
    sessions_from_args,
    slo_from_args,
    start_server,
    workload_from_args,
)
from servesweep.errors import ConfigError
from servesweep.loadgen.load_runner import run_async
from servesweep.loadgen.target import check_loopback
from servesweep.loadtest import LoadTestConfig, run_load_test, run_on_server
from servesweep.prefix_check import check_reset_target
from servesweep.reports.assertions import parse_assertions
from servesweep.results import ensure_writable_dir


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="load-test one server (launched, attached, or the built-in CPU vLLM)")
    add_backend_options(p)
    add_load_options(p)
    p.add_argument("--no-telemetry", action="store_true",
                   help="with --url: do not sample the server's metrics endpoint")
    p.set_defaults(handler=cmd_run)


def attached_telemetry(url: str, out: Path, enabled: bool) -> Telemetry | None:
    """Sample what a running server exposes (vLLM or SGLang Prometheus, TensorRT-LLM JSON or
    Prometheus), exactly as for a launched server; say once what was found."""
    if not enabled:
        console.print("telemetry: off (--no-telemetry)")
        return None
    reader, what = detect_metrics(url)
    console.print(f"telemetry: {what}", soft_wrap=True)
    return TelemetrySampler(reader, out / "telemetry.jsonl") if reader is not None else None


def cmd_run(args: argparse.Namespace) -> int:
    assertions = parse_assertions(args.assertions)  # a bad expression is refused before any load
    workload = workload_from_args(args)
    levels = levels_from_args(args)
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if args.max_repeats < 2:
        raise ConfigError(f"--max-repeats must be >= 2, got {args.max_repeats}")
    common = dict(workload=workload, levels=levels, slo=slo_from_args(args), allow_remote=args.allow_remote,
                  keep_text=args.keep_text, show_progress=False if args.no_progress else None,
                  tokenizer_dir=args.tokenizer, workers=args.workers, trace_file=args.trace,
                  trace_format=args.trace_format, trace_speed=args.trace_speed, sessions=sessions_from_args(args),
                  records=args.records, report_interval_s=args.report_interval, repeats=args.repeats,
                  target_precision=args.target_precision, max_repeats=args.max_repeats,
                  reset_prefix_cache=args.reset_prefix_cache)
    if args.url:
        if args.backend:
            raise ConfigError("give either --url (attach) or --backend (launch), not both")
        if args.reset_prefix_cache:
            check_reset_target(args.url)
        if not args.allow_remote:
            check_loopback(args.url)  # before anything is sent (the metrics probe too) or created
        out = ensure_writable_dir(args.out or default_out_dir("attach"))
        telemetry = attached_telemetry(args.url, out, not args.no_telemetry)
        summary = run_async(run_load_test(LoadTestConfig(base_url=args.url, model=args.model, out_dir=out, **common),
                                          telemetry=telemetry))
        return finish_run(summary, out, assertions, args.wide)
    server_config = server_config_from_args(args)
    out = ensure_writable_dir(args.out or default_out_dir(server_config.label()))
    with start_server(server_config, out) as server:
        # Servers without /tokenize (TensorRT-LLM) get exact-length prompts from the model's tokenizer.
        tokenizer = common.pop("tokenizer_dir") or server.tokenizer_dir
        summary = run_on_server(server, LoadTestConfig(base_url=server.base_url, model=server.model_name,
                                                       out_dir=out, tokenizer_dir=tokenizer, **common))
    return finish_run(summary, out, assertions, args.wide)
