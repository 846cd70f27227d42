"""Greedy outputs with top-k logprobs on fixed prompts, for comparing precisions.

The same prompts (same seed) go to every server configuration of a sweep, decoded greedily
with the output length pinned, so differences come from the numerics alone.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np

from servesweep.loadgen.tokenizer import TokenizerLike
from servesweep.loadgen.workload import exact_length_text

DRIFT_SEED = 20261122


async def drift_prompts(tokenizer: TokenizerLike, n: int, prompt_len: int) -> list[str]:
    rng = np.random.default_rng(DRIFT_SEED)
    return [(await exact_length_text(tokenizer, prompt_len, rng))[0] for _ in range(n)]


async def greedy_outputs(
    base_url: str, model: str, prompts: list[str], max_tokens: int, top_logprobs: int
) -> list[dict[str, Any]]:
    """Per prompt: generated tokens and, per position, the top-k {token: logprob} map."""
    outputs = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for prompt in prompts:
            payload = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "logprobs": top_logprobs, "ignore_eos": True}
            async with session.post(base_url.rstrip("/") + "/v1/completions", json=payload) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"drift probe: HTTP {resp.status}: {body}")
            logprobs = body["choices"][0].get("logprobs") or {}
            outputs.append({
                "text": body["choices"][0].get("text", ""),
                "tokens": logprobs.get("tokens") or [],
                "top_logprobs": logprobs.get("top_logprobs") or [],
            })
    return outputs
