"""The length tail against a KV pool: how often `concurrency` requests in flight hold more KV
cache than the pool, predicted from the workload's length distributions.

The model (what the prediction assumes; the headroom step reports it beside a measurement):
  - the recommended load keeps `concurrency` requests in flight (closed loop): each of that many
    slots runs one request after another, their lengths drawn from the workload's distributions
    (clipped to the model's context as the load generator clips them);
  - a request holds its prompt for `prefill_steps` steps (the measured mean TTFT over the mean
    TPOT at the recommended load: the service times say how long a prompt waits for its first
    token), then one step per output token holding prompt + the tokens so far, in whole blocks;
  - the slots are staggered: each starts at a random point of its first request;
  - a preemption is counted each time the sum over the slots grows to more than the pool (a
    step whose blocks in use rise and end above it: the first crossing, and every further growth
    while the demand stays above, when the server would preempt again). What a preemption does
    next (the request recomputed later, the load lower for a moment) is left out: the estimate
    is for rare events, where that feedback is rare too, and an upper bound past them.
Preemptions per 10,000 requests = those steps / requests completed x 10,000. One simulation
serves every pool size: the counts of all sizes are taken at once (`Occupancy`).

Sizing for a target rate (`blocks_for_rate`): the smallest pool whose rate, and every larger
pool's, is at most the target; the alternative to max_num_seqs x p99 lengths (sweep/sizing.py).

Length headroom (`length_scale_at_rate`): how much longer every request may get (both length
distributions scaled by k, still clipped to the context) before a given pool's predicted rate
passes the target; bisected on k with the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servesweep.loadgen.fit import clip_pairs
from servesweep.loadgen.lengths import LengthSpec

DEFAULT_REQUESTS = 100_000
PER_10K = 10_000.0


@dataclass(slots=True, frozen=True)
class Occupancy:
    """The blocks in use at each step of a simulated run, and the crossings of every pool size."""

    blocks: np.ndarray  # blocks in use, summed over the slots, per step
    crossings: np.ndarray  # [P]: steps at which use rose to more than P blocks
    requests: int  # requests completed within the series
    concurrency: int
    block_size: int

    def preemptions_per_10k(self, pool_blocks: int) -> float:
        if pool_blocks >= len(self.crossings):
            return 0.0
        return float(self.crossings[max(pool_blocks, 0)]) / max(self.requests, 1) * PER_10K

    def tokens_per_request(self) -> float:
        """Mean KV tokens (whole blocks) one in-flight request holds."""
        return float(self.blocks.mean()) / self.concurrency * self.block_size

    def blocks_for_rate(self, target_per_10k: float) -> int:
        """The smallest pool (blocks) whose predicted rate, and every larger pool's, is <= the target."""
        rates = self.crossings / max(self.requests, 1) * PER_10K
        over = np.nonzero(rates > target_per_10k)[0]
        return int(over[-1]) + 1 if over.size else 0


def _slot_series(rng: np.random.Generator, inputs: np.ndarray, outputs: np.ndarray, block_size: int,
                 prefill_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One slot's blocks per step, and the step at which each of its requests ends."""
    life = outputs + prefill_steps
    ends = np.cumsum(life)
    request = np.repeat(np.arange(len(life)), life)
    step = np.arange(int(ends[-1])) - (ends - life)[request]
    tokens = inputs[request] + np.clip(step - prefill_steps + 1, 0, None)
    return (tokens + block_size - 1) // block_size, ends


def simulate(input_len: LengthSpec, output_len: LengthSpec, concurrency: int, block_size: int,
             prefill_steps: int = 0, requests: int = DEFAULT_REQUESTS, seed: int = 0,
             context: int | None = None) -> Occupancy:
    """The occupancy of `concurrency` slots over about `requests` requests (module docstring)."""
    if concurrency < 1 or block_size < 1 or prefill_steps < 0:
        raise ValueError("concurrency and block_size must be >= 1, prefill_steps >= 0")
    rng = np.random.default_rng(seed)
    per_slot = max(requests // concurrency, 16)
    series, done = [], 0
    ends_all = []
    for _ in range(concurrency):
        inputs = input_len.sample(rng, per_slot, ceiling=context)
        outputs = output_len.sample(rng, per_slot, ceiling=context)
        if context:
            clip_pairs(inputs, outputs, context)
        blocks, ends = _slot_series(rng, inputs, outputs, block_size, prefill_steps)
        offset = int(rng.integers(0, ends[0]))  # staggered: a random point of the first request
        series.append(blocks[offset:])
        ends_all.append(ends - offset)
    length = min(len(s) for s in series)
    used = np.sum([s[:length] for s in series], axis=0)
    done = int(sum(np.searchsorted(e, length, side="right") for e in ends_all))
    rise = np.nonzero(used[1:] > used[:-1])[0]
    diff = np.zeros(int(used.max()) + 2, dtype=np.int64)
    diff[0] = len(rise)  # every pool below the level a step rose to is overrun by it
    np.add.at(diff, used[rise + 1], -1)
    return Occupancy(blocks=used, crossings=np.cumsum(diff)[:-1], requests=done, concurrency=concurrency,
                     block_size=block_size)


def scaled(spec: LengthSpec, k: float) -> LengthSpec:
    """The distribution with every length k times as long (the spread of a lognormal kept)."""
    if spec.kind == "fixed":
        return spec.model_copy(update={"a": max(1, round(spec.a * k))})
    if spec.kind == "lognormal":
        return spec.model_copy(update={"a": spec.a * k})
    return spec.model_copy(update={"a": max(1.0, spec.a * k), "b": spec.b * k})  # uniform, normal


def length_scale_at_rate(input_len: LengthSpec, output_len: LengthSpec, concurrency: int, block_size: int,
                         prefill_steps: int, pool_blocks: int, target_per_10k: float, context: int | None = None,
                         top: float = 8.0, requests: int = 20_000, steps: int = 10) -> float | None:
    """The length factor k at which `pool_blocks`' predicted rate passes the target (None: not up
    to `top`, or the context caps the lengths first)."""
    def rate(k: float) -> float:
        occ = simulate(scaled(input_len, k), scaled(output_len, k), concurrency, block_size, prefill_steps,
                       requests=requests, context=context)
        return occ.preemptions_per_10k(pool_blocks)

    if rate(top) <= target_per_10k:
        return None
    low, high = 1.0, top
    if rate(low) > target_per_10k:
        return 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if rate(mid) > target_per_10k else (mid, high)
    return high


def longest_request_blocks(input_len: LengthSpec, output_len: LengthSpec, block_size: int,
                           context: int | None = None) -> int:
    """The blocks the longest request the workload can send holds (its lengths' maxima, clipped
    to the context)."""
    tokens = input_len.max_value + output_len.max_value
    if context:
        tokens = min(tokens, context)
    return -(-tokens // block_size)


def upper_95_per_10k(requests: int) -> float | None:
    """The 95 % upper bound of a rate of which none was seen in `requests` (the rule of three)."""
    return 3.0 / requests * PER_10K if requests > 0 else None
