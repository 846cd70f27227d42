"""Write the two small synthetic traces servesweep ships, for trying trace replay offline.

    python scenarios/traces/make_traces.py [--out DIR]     (default: this script's directory)

writes
  synthetic-mooncake.jsonl  Mooncake/AIPerf layout: timestamp (ms), input_length, output_length, hash_ids
  synthetic-azure.csv       Azure LLM inference trace layout: TIMESTAMP,ContextTokens,GeneratedTokens

Both are SYNTHETIC (drawn from the distributions below, not recorded from any service) and sized
for a model with max_model_len 1024: input <= 600 tokens, output <= 128, 160 requests over 25 s.

Arrivals are bursty: inter-arrival gaps are gamma-distributed with shape 0.25 (coefficient of
variation 2, so clumps of near-simultaneous requests and long lulls), rescaled so the last request
comes DURATION_S after the first.

Mooncake lengths and prefixes: 60 % of requests are "chat with a system prompt": 520-600 input
tokens whose first 512-token block is one of 3 shared system prompts (hash ids 0-2) and whose
second block is their own; the rest are standalone prompts of 16-500 tokens (lognormal, median
180) with one block of their own. Outputs: lognormal, median 48 tokens, clipped to 4-128.

Azure lengths: context lognormal (median 250, clipped 8-600), generated lognormal (median 40,
clipped 4-128); timestamps start at 2023-11-16 18:15:46 and carry 7 fractional digits like the
published traces.

Stdlib and numpy only; seeded, so the output is byte-for-byte the same on every run
(tests/test_traces.py regenerates both files and compares them with the committed ones).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

SEED = 15
N_REQUESTS = 160
DURATION_S = 25.0
GAMMA_SHAPE = 0.25
SHARED_SYSTEM_PROMPTS = 3
BLOCK = 512
AZURE_START = dt.datetime(2023, 11, 16, 18, 15, 46)
MOONCAKE_FILE = "synthetic-mooncake.jsonl"
AZURE_FILE = "synthetic-azure.csv"


def arrival_ticks(rng: np.random.Generator, n: int, ticks_per_s: int) -> list[int]:
    """Send times in integer ticks from the first request (0), bursty, last at DURATION_S."""
    gaps = rng.gamma(GAMMA_SHAPE, 1.0, size=n - 1)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    times *= DURATION_S / times[-1]
    return [int(round(t * ticks_per_s)) for t in times]


def lognormal_int(rng: np.random.Generator, median: float, sigma: float, low: int, high: int) -> int:
    return int(np.clip(round(rng.lognormal(np.log(median), sigma)), low, high))


def mooncake_lines(seed: int = SEED) -> list[str]:
    rng = np.random.default_rng([seed, 1])
    next_id = 100  # own blocks get ids from here; 0..SHARED_SYSTEM_PROMPTS-1 are the shared ones
    lines = []
    for ms in arrival_ticks(rng, N_REQUESTS, 1000):
        if rng.random() < 0.6:
            input_len = int(rng.integers(BLOCK + 8, 601))
            hash_ids = [int(rng.integers(SHARED_SYSTEM_PROMPTS)), next_id]
            next_id += 1
        else:
            input_len = lognormal_int(rng, 180, 0.6, 16, 500)
            hash_ids = [next_id]
            next_id += 1
        output_len = lognormal_int(rng, 48, 0.6, 4, 128)
        lines.append(json.dumps({"timestamp": ms, "input_length": input_len,
                                 "output_length": output_len, "hash_ids": hash_ids}))
    return lines


def azure_lines(seed: int = SEED) -> list[str]:
    rng = np.random.default_rng([seed, 2])
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for ticks in arrival_ticks(rng, N_REQUESTS, 10_000_000):  # 100 ns ticks: 7 fractional digits
        seconds, frac = divmod(ticks, 10_000_000)
        stamp = (AZURE_START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
        context = lognormal_int(rng, 250, 0.7, 8, 600)
        generated = lognormal_int(rng, 40, 0.7, 4, 128)
        lines.append(f"{stamp}.{frac:07d},{context},{generated}")
    return lines


def write_traces(out: Path, seed: int = SEED) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / MOONCAKE_FILE, out / AZURE_FILE]
    paths[0].write_text("\n".join(mooncake_lines(seed)) + "\n", encoding="utf-8")
    paths[1].write_text("\n".join(azure_lines(seed)) + "\n", encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    for path in write_traces(args.out):
        print(path)


if __name__ == "__main__":
    main()
