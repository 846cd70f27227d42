"""Output drift between precisions: a sanity check, never the quality gate.

token_agreement   share of generated positions where the greedy token equals the reference's,
                  counted up to the first divergence and then over the rest of the output
                  (after a divergence the contexts differ, so later agreement is by chance).
logprob_cosine    cosine similarity of the top-k probability vectors (union of both top-k
                  token sets, missing entries 0), averaged over positions before the first
                  divergence, where both runs saw the same context.
Two runs can agree at cosine 0.99 and still pick different tokens where the top two candidates
are close: `high_cosine_divergence_example` records such a case when the data has one.
"""

from __future__ import annotations

import math
from typing import Any


def _cosine(a: dict[str, float], b: dict[str, float]) -> float | None:
    keys = set(a) | set(b)
    va = [math.exp(a[k]) if k in a else 0.0 for k in keys]
    vb = [math.exp(b[k]) if k in b else 0.0 for k in keys]
    na, nb = math.sqrt(sum(x * x for x in va)), math.sqrt(sum(x * x for x in vb))
    if na == 0 or nb == 0:
        return None
    return sum(x * y for x, y in zip(va, vb)) / (na * nb)


def compare_outputs(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    agree = total = 0
    cosines: list[float] = []
    first_divergence: list[int] = []
    example = None
    for prompt_index, (ref, out) in enumerate(zip(reference, other)):
        r_tokens, o_tokens = ref["tokens"], out["tokens"]
        n = min(len(r_tokens), len(o_tokens))
        diverged_at = n
        for i in range(n):
            same = r_tokens[i] == o_tokens[i]
            agree += same
            total += 1
            if diverged_at == n:
                r_top = (ref["top_logprobs"][i] if i < len(ref["top_logprobs"]) else None) or {}
                o_top = (out["top_logprobs"][i] if i < len(out["top_logprobs"]) else None) or {}
                cos = _cosine(r_top, o_top)
                if cos is not None:
                    cosines.append(cos)
                if not same:
                    diverged_at = i
                    if cos is not None and cos >= 0.99 and example is None:
                        example = {"prompt_index": prompt_index, "position": i, "cosine": cos,
                                   "reference_token": r_tokens[i], "token": o_tokens[i],
                                   "reference_top": r_top, "top": o_top}
        first_divergence.append(diverged_at)
    return {
        "token_agreement": agree / total if total else None,
        "logprob_cosine": sum(cosines) / len(cosines) if cosines else None,
        "mean_first_divergence": sum(first_divergence) / len(first_divergence) if first_divergence else None,
        "positions_compared": total,
        "high_cosine_divergence_example": example,
    }
