"""servesweep next to `vllm bench serve`: one launched server, the same workload, the tools alternating.

    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu/side_by_side.py --model /tmp/llama3-8b-dummy \
        --out /tmp/sbs --concurrency 16,128,512 --deadline-s 480

One bf16 vLLM server is launched once (through servesweep's own launcher, so it is the server the
sweep measures) and both tools run against it at each concurrency, alternating which goes first:
random prompts of 512 tokens, 128 output tokens with EOS ignored, num prompts = 3 x concurrency,
and `concurrency` requests of warm-up that finish before the measured window (servesweep
--warmup; vllm bench --num-warmups where the installed vLLM has it). Each tool's own numbers are
read back: vllm bench's --save-result JSON (output_throughput, median_ttft_ms, median_tpot_ms)
and servesweep's summary.json (output_token_throughput, ttft_ms.p50, tpot_ms.p50).

Writes OUT/side_by_side.md (the table, rewritten after every run so a cut-off call keeps what
finished), OUT/side_by_side.json (every run's numbers and command), the server log and each
tool's raw output. The ratio column is servesweep / vllm bench: 1.00 means agreement.

Definitions differ slightly, and the table says so: vllm bench divides output tokens by the time
from its first request to its last response; servesweep by the window from the first measured
request's send to the last one's end. Both take TPOT per request as (e2e - TTFT) / (tokens - 1).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = ("vllm bench", "servesweep")
# --ab-chunk-usage adds servesweep without per-chunk usage (--no-chunk-usage): what asking vLLM's
# front-end for usage beside every chunk costs the server, measured beside the other two.
FINAL_USAGE = "servesweep final-usage"
METRICS = (("output_tok_s", "output tok/s", "{:,.0f}"), ("ttft_p50_ms", "TTFT p50 ms", "{:.1f}"),
           ("tpot_p50_ms", "TPOT p50 ms", "{:.2f}"))


def vllm_bench_command(base_url: str, model: str, tokenizer: str, c: int, n: int, input_len: int,
                       output_len: int, out_dir: Path, name: str, warmups: int, seed: int) -> list[str]:
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
           "--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
           "--model", model, "--tokenizer", tokenizer,
           "--dataset-name", "random", "--random-input-len", str(input_len),
           "--random-output-len", str(output_len), "--random-range-ratio", "0.0", "--ignore-eos",
           "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf", "--seed", str(seed),
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--disable-tqdm",
           "--save-result", "--result-dir", str(out_dir), "--result-filename", f"{name}.json"]
    return cmd + (["--num-warmups", str(warmups)] if warmups else [])


def servesweep_command(base_url: str, model: str, tokenizer: str, c: int, n: int, input_len: int,
                       output_len: int, out_dir: Path, warmups: int, seed: int, telemetry: bool,
                       workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "servesweep", "run", "--url", base_url, "--model", model,
           "--tokenizer", tokenizer, "--concurrency", str(c), "--num-requests", str(n),
           "--warmup", str(warmups), "--input-len", str(input_len), "--output-len", str(output_len),
           "--seed", str(seed), "--workers", str(workers), "--out", str(out_dir), "--no-progress"]
    return cmd + ([] if telemetry else ["--no-telemetry"])


def parse_vllm_bench(path: Path) -> dict[str, Any]:
    """The numbers compared, from `vllm bench serve --save-result` JSON."""
    data = json.loads(path.read_text())
    completed = data.get("completed") or 0
    return {
        "output_tok_s": data.get("output_throughput"),
        "ttft_p50_ms": data.get("median_ttft_ms"),
        "tpot_p50_ms": data.get("median_tpot_ms"),
        "completed": completed,
        "failed": data.get("failed"),
        "duration_s": data.get("duration"),
        "mean_input_tokens": (data.get("total_input_tokens") or 0) / completed if completed else None,
        "mean_output_tokens": (data.get("total_output_tokens") or 0) / completed if completed else None,
    }


def parse_servesweep(path: Path) -> dict[str, Any]:
    """The same numbers from servesweep's summary.json (its one level)."""
    data = json.loads(path.read_text())
    level = (data.get("levels") or [data])[0]
    completed = level.get("completed") or 0
    return {
        "output_tok_s": level.get("output_token_throughput"),
        "ttft_p50_ms": (level.get("ttft_ms") or {}).get("p50"),
        "tpot_p50_ms": (level.get("tpot_ms") or {}).get("p50"),
        "completed": completed,
        "failed": level.get("failed"),
        "duration_s": level.get("duration_s"),
        "mean_input_tokens": (level.get("total_prompt_tokens") or 0) / completed if completed else None,
        "mean_output_tokens": (level.get("total_output_tokens") or 0) / completed if completed else None,
        # Is the client the limit? Its own lateness in sending (p99, ms) says so if it is large.
        "client_send_delay_p99_ms": (level.get("client_send_delay_ms") or {}).get("p99"),
    }


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_order(tools: tuple[str, ...], turn: int) -> tuple[str, ...]:
    """The tools of one round in the order they run: rotated by one place a turn (round plus the
    concurrency's index), whatever call runs it, so over as many rounds as tools each tool runs in
    each position once. With two tools that is the old alternation; with three, reversing the
    order (as before 2026-12-07) left the middle tool second in every round, and the H100's c128
    TTFT rose with the run's position (examples/h100-2026-12-07-ab/README.md)."""
    k = turn % len(tools)
    return tools[k:] + tools[:k]


def render_rounds(runs: list[dict[str, Any]]) -> list[str]:
    """Per concurrency and tool: every round's figures, the median and the spread ((max - min) / median),
    then the ratio of the medians servesweep / vllm bench: the noise of each tool beside the agreement."""
    lines = ["", "Over the rounds (median; spread = (max - min) / median, each tool's own run-to-run noise):", "",
             "| concurrency | tool | rounds | " + " | ".join(f"{label} (median, spread)" for _, label, _ in METRICS)
             + " |", "|---:|---|---:|" + "---:|" * len(METRICS)]
    ratio_lines = ["", "Ratio of the medians, servesweep / vllm bench (the goal: within 5 %, i.e. 0.95-1.05):", "",
                   "| concurrency | servesweep variant | " + " | ".join(label for _, label, _ in METRICS) + " |",
                   "|---:|---|" + "---:|" * len(METRICS)]
    for c in sorted({r["concurrency"] for r in runs}):
        medians: dict[str, dict[str, float | None]] = {}
        for tool in TOOLS + (FINAL_USAGE,):
            mine = [r["result"] for r in runs if r["concurrency"] == c and r["tool"] == tool and r.get("result")]
            if not mine:
                continue
            cells, med = [], {}
            for key, _, fmt in METRICS:
                vals = [m[key] for m in mine if m.get(key) is not None]
                med[key] = _median(vals)
                spread = (max(vals) - min(vals)) / med[key] if len(vals) > 1 and med[key] else None
                cells.append((fmt.format(med[key]) if med[key] is not None else "-")
                             + (f" ({spread:.1%})" if spread is not None else ""))
            medians[tool] = med
            lines.append(f"| {c} | {tool} | {len(mine)} | " + " | ".join(cells) + " |")
        for tool in ("servesweep", FINAL_USAGE):
            if tool in medians and "vllm bench" in medians:
                a, b = medians[tool], medians["vllm bench"]
                variant = "per-chunk usage" if tool == "servesweep" else "final usage only"
                ratio_lines.append(f"| {c} | {variant} | " + " | ".join(
                    f"{a[k] / b[k]:.3f}" if a[k] and b[k] else "-" for k, _, _ in METRICS) + " |")
    return lines + ratio_lines


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def render_table(runs: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """Markdown: per concurrency and tool the mean over its runs, then servesweep / vllm bench."""
    lines = [f"# servesweep vs vllm bench serve ({header.get('device', 'GPU')})", "",
             f"One {header.get('precision', 'bf16')} vLLM{' ' + header['vllm_version'] if header.get('vllm_version') else ''} server "
             f"({header.get('model')}, max_num_seqs {header.get('max_num_seqs')}), launched once; "
             f"random prompts of {header.get('input_len')} tokens, {header.get('output_len')} output tokens "
             "(EOS ignored), num prompts = 3 x concurrency, warm-up = concurrency requests before the window "
             f"({header.get('warmup_note', '')}); the tools alternate which runs first. "
             f"servesweep ran with {header.get('servesweep_note', '')}.", "",
             "| concurrency | tool | runs | output tok/s | TTFT p50 ms | TPOT p50 ms | completed (failed) "
             "| mean in / out tokens |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    tools = TOOLS + ((FINAL_USAGE,) if any(r["tool"] == FINAL_USAGE for r in runs) else ())
    for c in sorted({r["concurrency"] for r in runs}):
        means: dict[str, dict[str, float | None]] = {}
        for tool in tools:
            mine = [r for r in runs if r["concurrency"] == c and r["tool"] == tool and r.get("result")]
            failed = [r for r in runs if r["concurrency"] == c and r["tool"] == tool and not r.get("result")]
            if not mine:
                if failed:
                    lines.append(f"| {c} | {tool} | 0 | failed: {failed[0].get('error', '?')[:80]} | | | | |")
                continue
            m = {key: _mean([r["result"][key] for r in mine]) for key, _, _ in METRICS}
            means[tool] = m
            done = sum(r["result"]["completed"] or 0 for r in mine)
            bad = sum(r["result"]["failed"] or 0 for r in mine)
            lens = (_mean([r["result"]["mean_input_tokens"] for r in mine]),
                    _mean([r["result"]["mean_output_tokens"] for r in mine]))
            cells = [fmt.format(m[key]) if m[key] is not None else "-" for key, _, fmt in METRICS]
            spread = ""
            if len(mine) > 1:
                spread = " (" + ", ".join(f"{r['result']['output_tok_s']:,.0f}" for r in mine) + ")"
            lens_cell = " / ".join(f"{x:.0f}" if x is not None else "-" for x in lens)
            lines.append(f"| {c} | {tool} | {len(mine)} | {cells[0]}{spread} | {cells[1]} | {cells[2]} "
                         f"| {done} ({bad}) | {lens_cell} |")
        for tool in ("servesweep", FINAL_USAGE):
            if tool in means and "vllm bench" in means:
                a, b = means[tool], means["vllm bench"]
                row = {key: (a[key] / b[key] if a[key] and b[key] else None) for key, _, _ in METRICS}
                ratios.append((c, tool, row))
    lines += ["", "Ratio servesweep / vllm bench (1.00 = agreement; the goal is within 5 %):", "",
              "| concurrency | servesweep | output tok/s | TTFT p50 | TPOT p50 |", "|---:|---|---:|---:|---:|"]
    for c, tool, row in ratios:
        variant = "per-chunk usage" if tool == "servesweep" else "final usage only"
        lines.append(f"| {c} | {variant} | "
                     + " | ".join(f"{row[key]:.3f}" if row[key] else "-" for key, _, _ in METRICS) + " |")
    if any(r.get("round", 0) > 0 for r in runs):
        lines += render_rounds(runs)
    lines += ["", "Throughput windows differ slightly: vllm bench divides output tokens by the time from its "
              "first request to its last response, servesweep by the window from the first measured send to "
              "the last measured end. Raw numbers and commands: side_by_side.json."]
    return "\n".join(lines) + "\n"


def run_tool(cmd: list[str], log: Path, timeout_s: float) -> tuple[int, str]:
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = 124
    tail = log.read_text(errors="replace").splitlines()[-3:]
    return rc, " | ".join(tail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory (config + tokenizer)")
    p.add_argument("--served-model-name", default="llama3-8b-dummy")
    p.add_argument("--load-format", default="dummy", choices=["auto", "dummy"])
    p.add_argument("--precision", default="bf16")
    p.add_argument("--max-num-seqs", type=int, default=512)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--concurrency", default="16,128,512", help="comma-separated, run in this order")
    p.add_argument("--rounds", type=int, default=2, help="runs of each tool per concurrency (alternating)")
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--telemetry", action="store_true", help="let servesweep sample /metrics (default: off, "
                   "as vllm bench does not)")
    p.add_argument("--workers", type=int, default=1, help="servesweep load-generator processes")
    p.add_argument("--ab-chunk-usage", nargs="?", const="all", default="",
                   help="also run servesweep with --no-chunk-usage (what per-chunk usage costs the server); "
                        "optionally only at these comma-separated concurrencies (e.g. 512)")
    p.add_argument("--deadline-s", type=float, default=480.0,
                   help="start no new run after this many seconds from the script's start")
    p.add_argument("--run-timeout-s", type=float, default=240.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    from servesweep.backends import config_from_dict, launch

    t_start = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    concurrencies = [int(x) for x in args.concurrency.split(",") if x.strip()]
    ab_at = (set(concurrencies) if args.ab_chunk_usage == "all"
             else {int(x) for x in args.ab_chunk_usage.split(",") if x.strip()})

    def tools_at(c: int) -> tuple[str, ...]:
        return TOOLS + ((FINAL_USAGE,) if c in ab_at else ())

    # Resumable across device calls: runs that finished in an earlier call (on an earlier server
    # start, recorded per run) are kept, and only the missing (concurrency, round, tool) run.
    previous = json.loads((out / "side_by_side.json").read_text()) if (out / "side_by_side.json").exists() else {}
    runs: list[dict[str, Any]] = previous.get("runs", [])
    done = {(r["concurrency"], r["round"], r["tool"]) for r in runs if r.get("result")}
    runs = [r for r in runs if r.get("result")]  # a failed run is tried again
    todo = [(c, r) for r in range(args.rounds) for c in concurrencies
            if any((c, r, t) not in done for t in tools_at(c))]
    if not todo:
        print("side by side: every run done earlier; nothing to do", flush=True)
        return 0
    config = config_from_dict({"kind": "vllm", "model": args.model, "served_model_name": args.served_model_name,
                               "precision": args.precision, "load_format": args.load_format,
                               "max_model_len": args.max_model_len, "max_batch_size": args.max_num_seqs})
    print(f"starting vLLM ({config.label()}) ...", flush=True)
    server = launch(config, out)
    info = server.info()
    print(f"vLLM {server.version} healthy after {server.startup_s:.0f} s at {server.base_url}; "
          f"KV pool {server.kv_pool.get('tokens')} tokens", flush=True)
    starts = previous.get("header", {}).get("server_starts", [])
    starts.append(round(server.startup_s, 1))
    header: dict[str, Any] = {
        "server_starts": starts,
        "device": ", ".join(info.get("gpus") or []) or "no GPU seen", "precision": args.precision,
        "vllm_version": server.version, "model": f"{args.served_model_name} ({args.load_format} weights)",
        "max_num_seqs": args.max_num_seqs, "input_len": args.input_len, "output_len": args.output_len,
        "servesweep_note": (f"{args.workers} load-generator process(es), telemetry "
                            f"{'on' if args.telemetry else 'off (--no-telemetry)'}"),
        "warmup_note": "vllm bench --num-warmups", "server_command": info.get("command"),
        "startup_s": server.startup_s,
    }
    warmup_flag_ok = True

    def save() -> None:
        (out / "side_by_side.md").write_text(render_table(runs, header))
        (out / "side_by_side.json").write_text(json.dumps({"header": header, "runs": runs}, indent=2))

    try:
        # Round-major: every concurrency's first round before any second one, so a deadline that
        # cuts the call leaves all three concurrencies measured once rather than the last one not at all.
        for c, r in todo:
            n = 3 * c
            # A round is one run of each tool; which goes first alternates from round to round. The
            # deadline is checked per round, so no round is left with one tool's numbers only.
            if time.monotonic() - t_start > args.deadline_s:
                print(f"deadline reached: skipping c={c} round {r}", flush=True)
                header.setdefault("skipped", []).append(f"c={c} round {r}")
                continue
            for tool in run_order(tools_at(c), r + concurrencies.index(c)):
                if (c, r, tool) in done:
                    continue
                name = f"c{c}-r{r}-" + {"vllm bench": "vllm", "servesweep": "servesweep"}.get(tool, "servesweep-final-usage")
                run_dir = out / name
                run_dir.mkdir(exist_ok=True)
                # One seed per tool and round: two servesweep variants with the same seed send the same
                # prompts, and the second then reads them from vLLM's prefix cache (the 2026-12-02 A/B run:
                # whichever variant ran second measured 3x lower TTFT and up to 1.9x the throughput).
                seed = 1000 * c + 10 * r + tools.index(tool)
                if tool == "vllm bench":
                    cmd = vllm_bench_command(server.base_url, server.model_name, args.model, c, n,
                                             args.input_len, args.output_len, run_dir, name,
                                             c if warmup_flag_ok else 0, seed)
                    rc, tail = run_tool(cmd, run_dir / "output.log", args.run_timeout_s)
                    said = (run_dir / "output.log").read_text(errors="replace").split("\n", 1)[-1]
                    if rc != 0 and warmup_flag_ok and "unrecognized arguments" in said and "--num-warmups" in said:
                        # An older vllm bench without --num-warmups: run unwarmed, and say so.
                        warmup_flag_ok = False
                        header["warmup_note"] = ("this vllm bench has no --num-warmups: its runs are not "
                                                 "warmed up beyond the previous runs on the same server")
                        cmd = cmd[:-2]
                        rc, tail = run_tool(cmd, run_dir / "output.log", args.run_timeout_s)
                    result_path = run_dir / f"{name}.json"
                    parse = parse_vllm_bench
                else:
                    cmd = servesweep_command(server.base_url, server.model_name, args.model, c, n, args.input_len,
                                             args.output_len, run_dir, c, seed, args.telemetry, args.workers)
                    if tool == FINAL_USAGE:
                        cmd.append("--no-chunk-usage")
                    rc, tail = run_tool(cmd, run_dir / "output.log", args.run_timeout_s)
                    result_path = run_dir / "summary.json"
                    parse = parse_servesweep
                entry: dict[str, Any] = {"concurrency": c, "tool": tool, "round": r, "rc": rc,
                                         "server_start": len(starts) - 1,
                                         "command": shlex.join(cmd)}
                if rc == 0 and result_path.exists():
                    entry["result"] = parse(result_path)
                    res = entry["result"]
                    print(f"c={c:<4} {tool:<11} r{r}: {res['output_tok_s']:,.0f} output tok/s, "
                          f"TTFT p50 {res['ttft_p50_ms']:.1f} ms, TPOT p50 {res['tpot_p50_ms']:.2f} ms, "
                          f"{res['completed']} ok", flush=True)
                else:
                    entry["error"] = f"exit {rc}: {tail}"
                    print(f"c={c:<4} {tool:<11} r{r}: FAILED {entry['error']}", flush=True)
                runs.append(entry)
                save()
                if server.poll_failure():
                    header["server_died"] = server.poll_failure()
                    print(f"server died: {header['server_died']}", flush=True)
                    return 1
    finally:
        save()
        server.stop()
    print((out / "side_by_side.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
