"""Greedy outputs with top-k logprobs on fixed prompts, for comparing precisions.

The same prompts (same seed) go to every server configuration of a sweep, decoded greedily
with the output length pinned, so differences come from the numerics alone.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np

from servesweep import controlplane
from servesweep.loadgen.tokenizer import TokenizerLike
from servesweep.loadgen.workload import exact_length_text
from servesweep.quality.generate import greedy_completion

DRIFT_SEED = 20261122


async def drift_prompts(tokenizer: TokenizerLike, n: int, prompt_len: int) -> list[str]:
    rng = np.random.default_rng(DRIFT_SEED)
    return [(await exact_length_text(tokenizer, prompt_len, rng))[0] for _ in range(n)]


async def greedy_outputs(
    base_url: str, model: str, prompts: list[str], max_tokens: int, top_logprobs: int
) -> list[dict[str, Any]]:
    """Per prompt: generated tokens and, per position, the top-k {token: logprob} map."""
    async with controlplane.session(timeout=aiohttp.ClientTimeout(total=300)) as session:
        return [await greedy_completion(session, base_url, model, prompt, max_tokens,
                                        top_logprobs=top_logprobs, ignore_eos=True) for prompt in prompts]
