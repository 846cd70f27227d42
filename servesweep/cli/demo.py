"""`servesweep demo`: the main job with nothing of one's own: the built-in CPU vLLM, a short ramp."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servesweep.cli.common import (
    add_wide_option,
    builtin_server_config,
    default_out_dir,
    finish_run,
    number_list,
    start_server,
)
from servesweep.cli.run import run_against
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig
from servesweep.results import ensure_writable_dir


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="start the built-in CPU vLLM, run a short ramp, print the results")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--concurrency", type=number_list(int), default=[1, 8, 32])
    p.add_argument("--num-requests", type=int, default=48)
    p.add_argument("--no-progress", action="store_true")
    add_wide_option(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    out = ensure_writable_dir(args.out or default_out_dir("demo"))
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
    return finish_run(summary, out, wide=args.wide)
