"""Command line: `servesweep run | demo | sweep | report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from servesweep import __version__


class UsageError(Exception):
    """The run could not happen; the message is the one-line reason."""


def _number_list(kind: type) -> Any:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None

    return parse


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_number_list(int), metavar="N[,N...]",
                      help="closed loop: users in flight; a list runs one level per value")
    mode.add_argument("--request-rate", type=_number_list(float), metavar="R[,R...]",
                      help="open loop: requests per second; a list runs one level per value")
    g.add_argument("--arrival", choices=["constant", "poisson", "gamma"], default=None,
                   help="open-loop arrival process (default: poisson, or gamma when --burstiness != 1)")
    g.add_argument("--burstiness", type=float, default=1.0,
                   help="gamma shape; <1 burstier than Poisson, >1 more regular (as vllm bench serve)")
    g.add_argument("--max-concurrency", type=int, default=None, help="open loop: cap on requests in flight")
    bound = g.add_mutually_exclusive_group()
    bound.add_argument("--num-requests", type=int, default=None, help="measured requests per level")
    bound.add_argument("--duration", type=float, default=None, help="seconds per level")
    g.add_argument("--warmup", type=int, default=0, help="requests per level sent first and left out of statistics")
    g.add_argument("--workers", type=int, default=1,
                   help="load-generator processes; each takes an even share of every level (default 1)")
    w = p.add_argument_group("workload")
    w.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    w.add_argument("--no-stream", action="store_true", help="non-streaming requests (TTFT = e2e)")
    w.add_argument("--input-len", default="128", metavar="SPEC",
                   help="N, uniform:LOW:HIGH, normal:MEAN:STD or lognormal:MEDIAN:SIGMA (tokens)")
    w.add_argument("--output-len", default="64", metavar="SPEC", help="as --input-len")
    w.add_argument("--dataset", type=Path, default=None, help="JSONL prompts (ShareGPT accepted)")
    w.add_argument("--shared-prefix-len", type=int, default=0, help="tokens of common prefix (system prompt)")
    w.add_argument("--no-ignore-eos", action="store_true", help="let the model stop early at EOS")
    w.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--tokenizer", type=Path, default=None, help="model directory holding tokenizer.json")
    s = p.add_argument_group("SLOs for goodput (ms)")
    s.add_argument("--slo-ttft-ms", type=float, default=None)
    s.add_argument("--slo-tpot-ms", type=float, default=None)
    s.add_argument("--slo-e2e-ms", type=float, default=None)
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None, help="results directory (default: results/<time>)")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--keep-text", action="store_true", help="store generated text in the records")
    o.add_argument("--allow-remote", action="store_true", help="allow a target that is not a loopback address")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("target")
    b.add_argument("--url", default=None, help="attach to a running OpenAI-compatible server")
    b.add_argument("--backend", choices=["vllm"], default=None,
                   help="launch this server for the run (default without --url: the built-in CPU vLLM)")
    b.add_argument("--model", default=None,
                   help="with --url: served model name (default: the first in /v1/models); "
                        "with --backend: model directory")
    b.add_argument("--precision", choices=["fp32", "fp16", "bf16", "fp8"], default="bf16")
    b.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    b.add_argument("--max-num-seqs", type=int, default=None)
    b.add_argument("--max-num-batched-tokens", type=int, default=None)
    b.add_argument("--gpu-memory-utilization", type=float, default=None)
    b.add_argument("--max-model-len", type=int, default=None)
    b.add_argument("--tensor-parallel-size", type=int, default=1)
    b.add_argument("--load-format", choices=["auto", "dummy"], default=None)
    b.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for /health")
    b.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed verbatim to the server (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servesweep", description="Load tests for LLM inference servers.")
    parser.add_argument("--version", action="version", version=f"servesweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="load-test one server (launched, attached, or the built-in CPU vLLM)")
    add_backend_options(run)
    add_load_options(run)

    demo = sub.add_parser("demo", help="start the built-in CPU vLLM, run a short ramp, print the results")
    demo.add_argument("--out", type=Path, default=None)
    demo.add_argument("--concurrency", type=_number_list(int), default=[1, 8, 32])
    demo.add_argument("--num-requests", type=int, default=48)
    demo.add_argument("--no-progress", action="store_true")

    from servesweep.cli.common import register_extra_commands

    register_extra_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from servesweep.cli.common import dispatch

    try:
        return dispatch(args)
    except UsageError as exc:
        print(f"servesweep: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"servesweep: error: {validation_message(exc)}", file=sys.stderr)
        return 2


def validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `field: message`."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()))
    msg = first["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
