"""The headroom's load search on the CPU vLLM with a KV pool smaller than its batch cap needs, so that
the preemption and KV-full onsets are reachable by load (with the verification's sizing they are
not: max_num_seqs x the longest request fits the pool, docs/headroom.md).

The built-in tiny Llama (dummy weights, bf16), max_num_seqs 32, a pool of `--blocks` blocks (72:
just above the one-request floor of max_model_len 1024), the cpu-smoke workload. The "recommended" load is a
closed loop at `--concurrency` (2, whose requests fit the pool), measured first; then
servesweep.sweep.headroom_run steps the offered load up from its rate, as after a verification.

    flock /tmp/servesweep-heavy.lock timeout 900 python bench/headroom_small_pool.py --out examples/cpu-headroom/small-pool
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from servesweep.backends import launch
from servesweep.backends.builtin import builtin_server_config
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.runner import run_async
from servesweep.loadtest import LoadTestConfig, run_load_test
from servesweep.results.io import write_json
from servesweep.scenarios.schema import load_scenario
from servesweep.sweep.headroom_run import HeadroomRun, VerifiedRun

BLOCK_SIZE = 16  # vLLM's CPU default
# What vLLM's CPU build counts per token of the tiny model (bf16): its verification server turned
# --kv-cache-memory-bytes 16252928 into a pool of 3,968 tokens (examples/cpu-headroom), twice the
# model shape's 2,048 bytes (2 layers x K, V x 4 heads x 64 x 2 bytes).
CPU_BYTES_PER_TOKEN = 4096


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenario", type=Path, default=Path(__file__).with_name("headroom_small_pool.yaml"))
    parser.add_argument("--blocks", type=int, default=72)
    parser.add_argument("--bytes-per-token", type=int, default=CPU_BYTES_PER_TOKEN)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    config = builtin_server_config(max_model_len=scenario.max_model_len, max_batch_size=32)
    per_token = args.bytes_per_token
    config = config.model_copy(update={"kv_cache_memory_bytes": args.blocks * BLOCK_SIZE * per_token})
    console = Console(stderr=True)
    traffic = args.out / "baseline" / "traffic"
    server = launch(config, args.out)
    try:
        load = LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=traffic,
                              levels=[LoadLevel(concurrency=args.concurrency, duration_s=20, warmup_requests=2)],
                              workload=scenario.workload, slo=scenario.slo, show_progress=False)
        summary = run_async(run_load_test(load, telemetry=server.telemetry(traffic / "telemetry.jsonl"),
                                          server_watch=server, server_info=server.info()))
        tel = summary.get("telemetry") or {}
        console.print(f"baseline c{args.concurrency}: {summary['request_throughput']:.3g} req/s, KV peak "
                      f"{tel.get('kv_cache_peak_frac')}, preemptions {tel.get('preemptions')}, pool "
                      f"{tel.get('kv_pool_tokens')} tokens")
        run = VerifiedRun(config=config.label(), level=f"c{args.concurrency}", attempt_dir=args.out / "baseline",
                          sizing={"max_num_seqs": 32, "kv_cache_memory_bytes": config.kv_cache_memory_bytes,
                                  "kv_blocks": args.blocks, "inputs": {"block_size": BLOCK_SIZE},
                                  "target_source": f"--blocks {args.blocks} (not a sizing: a pool too small on purpose)"},
                          traffic={"request_rate": summary["request_throughput"],
                                   "preemptions": tel.get("preemptions")},
                          concurrency=args.concurrency)
        HeadroomRun(scenario, args.out, console, show_progress=False, enabled=True).measure(server, run)
    finally:
        server.stop()
    write_json(args.out / "setup.json", {"server_command": server.info().get("command"), "blocks": args.blocks,
                                         "bytes_per_token": per_token, "concurrency": args.concurrency})
    return 0


if __name__ == "__main__":
    sys.exit(main())
