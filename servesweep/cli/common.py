"""What each sub-command does. The parser lives in cli.py."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from servesweep.backends.process import ServerStartError
from servesweep.models.tiny import build_tiny_model
from servesweep.backends.vllm import LaunchedVllm, UnsupportedConfig, VllmServerConfig, launch_vllm
from servesweep.cli import UsageError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.runner import run_async
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.target import TargetError
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_load_test
from servesweep.reports.table import print_summary

console = Console(stderr=True)
BUILTIN_MODEL_NAME = "servesweep-tiny-llama"


def default_out_dir(label: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{label}"


def builtin_server_config(**overrides: Any) -> VllmServerConfig:
    """The built-in target: the CPU build of vLLM serving a generated tiny Llama."""
    values: dict[str, Any] = dict(
        model=str(build_tiny_model()), served_model_name=BUILTIN_MODEL_NAME, precision="bf16",
        load_format="dummy", max_model_len=2048,
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return VllmServerConfig(**values)


def levels_from_args(args: argparse.Namespace) -> list[LoadLevel]:
    if args.num_requests is None and args.duration is None:
        args.num_requests = 100
    common = dict(num_requests=args.num_requests, duration_s=args.duration, warmup_requests=args.warmup)
    if args.request_rate:
        arrival = args.arrival or ("gamma" if args.burstiness != 1.0 else "poisson")
        return [LoadLevel(request_rate=r, arrival=arrival, burstiness=args.burstiness,
                          max_concurrency=args.max_concurrency, **common) for r in args.request_rate]
    return [LoadLevel(concurrency=c, **common) for c in (args.concurrency or [1])]


def workload_from_args(args: argparse.Namespace) -> Workload:
    return Workload(
        endpoint=args.endpoint, stream=not args.no_stream, input_len=args.input_len,
        output_len=args.output_len, dataset=args.dataset, shared_prefix_len=args.shared_prefix_len,
        ignore_eos=not args.no_ignore_eos, request_timeout_s=args.timeout, seed=args.seed,
    )


def slo_from_args(args: argparse.Namespace) -> SLO | None:
    slo = SLO(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms, e2e_ms=args.slo_e2e_ms)
    return None if slo.is_empty() else slo


def start_server(config: VllmServerConfig, out: Path) -> LaunchedVllm:
    """Launch with progress on stderr; failures become one clear UsageError."""
    last = [0.0]

    def tick(elapsed: float) -> None:
        if elapsed - last[0] >= 15:
            last[0] = elapsed
            console.print(f"  ... waiting for vLLM to become healthy ({elapsed:.0f} s)")

    console.print(f"starting vLLM ({config.label()}) for {config.model}; log: {out}/server-{config.label()}.log")
    try:
        server = launch_vllm(config, out, on_wait=tick)
    except UnsupportedConfig as exc:
        raise UsageError(str(exc)) from None
    except ServerStartError as exc:
        tail = "\n".join(exc.log_tail.splitlines()[-15:])
        if tail:
            console.print(f"[dim]{tail}[/dim]")
        raise UsageError(f"vLLM did not start: {exc.cause}: {exc.detail}") from None
    console.print(f"vLLM {server.version or ''} healthy at {server.base_url} after {server.startup_s:.0f} s; "
                  f"KV pool: {server.kv_pool.get('tokens')} tokens")
    return server


def run_against(server: LaunchedVllm | None, config: LoadTestConfig) -> dict[str, Any]:
    telemetry = server.telemetry(config.out_dir / "telemetry.jsonl") if server else None
    try:
        return run_async(run_load_test(
            config, telemetry=telemetry,
            server_watch=server.process if server else None,
            server_info=server.info() if server else None,
        ))
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    workload = workload_from_args(args)
    levels = levels_from_args(args)
    common = dict(workload=workload, levels=levels, slo=slo_from_args(args), allow_remote=args.allow_remote,
                  keep_text=args.keep_text, show_progress=False if args.no_progress else None,
                  tokenizer_dir=args.tokenizer, workers=args.workers)
    if args.url:
        if args.backend:
            raise UsageError("give either --url (attach) or --backend (launch), not both")
        out = args.out or default_out_dir("attach")
        summary = run_against(None, LoadTestConfig(base_url=args.url, model=args.model, out_dir=out, **common))
    else:
        if args.backend not in (None, "vllm"):
            raise UsageError(f"backend {args.backend!r} is not available yet")
        overrides = dict(
            precision=args.precision, kv_cache_dtype=args.kv_cache_dtype, max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len, tensor_parallel_size=args.tensor_parallel_size,
            load_format=args.load_format, startup_timeout_s=args.startup_timeout, extra_args=args.server_arg,
        )
        if args.model is None:
            server_config = builtin_server_config(**overrides)
        else:
            server_config = VllmServerConfig(model=args.model, **{k: v for k, v in overrides.items() if v is not None})
        out = args.out or default_out_dir(server_config.label())
        server = start_server(server_config, out)
        try:
            summary = run_against(server, LoadTestConfig(base_url=server.base_url, model=server.model_name,
                                                         out_dir=out, **common))
        finally:
            server.stop()
    return _finish(summary, out)


def _finish(summary: dict[str, Any], out: Path) -> int:
    # Wide enough for every column when stdout is a file or a CI log.
    print_summary(summary, Console() if sys.stdout.isatty() else Console(width=200), console)
    console.print(f"results: {out}/summary.json, {out}/records.jsonl")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job with nothing of one's own: real vLLM on this CPU, a short concurrency ramp."""
    out = args.out or default_out_dir("demo")
    server = start_server(builtin_server_config(), out)
    levels = [LoadLevel(concurrency=c, num_requests=args.num_requests, warmup_requests=min(c, 8))
              for c in args.concurrency]
    config = LoadTestConfig(
        base_url=server.base_url, model=server.model_name, out_dir=out, levels=levels,
        workload=Workload(input_len="uniform:64:256", output_len="uniform:32:96", seed=0),
        show_progress=False if args.no_progress else None,
    )
    try:
        summary = run_against(server, config)
    finally:
        server.stop()
    return _finish(summary, out)


def register_extra_commands(sub: Any) -> None:
    """Sub-commands defined outside cli.py's core pair (run, demo)."""
    sweep = sub.add_parser("sweep", help="run a scenario's sweep (resumable: finished points are skipped)")
    sweep.add_argument("scenario", type=Path)
    sweep.add_argument("--out", type=Path, required=True)
    sweep.add_argument("--no-report", action="store_true", help="skip writing the report afterwards")
    sweep.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="write report.html, report.md, points.csv, recommendation.json")
    report.add_argument("results_dir", type=Path)
    from servesweep.cli.gate import register as register_gate

    register_gate(sub)


def cmd_sweep(args: argparse.Namespace) -> int:
    from servesweep.scenarios.schema import ScenarioError, load_scenario
    from servesweep.sweep.runner import SweepInterrupted, SweepRunner

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    runner = SweepRunner(scenario, args.scenario, args.out, console,
                         show_progress=False if args.no_progress else None)
    try:
        points = runner.run()
    except SweepInterrupted:
        console.print(f"sweep interrupted; finished points are in {args.out}/points.jsonl; "
                      "run the same command again to resume")
        return 130
    failed = sum(p["status"] == "failed" for p in points)
    console.print(f"sweep done: {len(points)} points ({failed} failed) in {args.out}/points.jsonl")
    if not args.no_report:
        return _report(args.out)
    return 0


def _report(results_dir: Path) -> int:
    from servesweep.reports.render import ReportError, write_report

    try:
        paths = write_report(results_dir)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    console.print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _report(args.results_dir)


def cmd_gate(args: argparse.Namespace) -> int:
    from servesweep.cli.gate import cmd_gate as run_gate

    return run_gate(args)


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "sweep": cmd_sweep, "report": cmd_report, "gate": cmd_gate}


def dispatch(args: argparse.Namespace) -> int:
    handler = COMMANDS.get(args.command)
    if handler is None:
        raise UsageError(f"unknown command {args.command}")
    return handler(args)
