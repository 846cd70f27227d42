"""Measure a gate metric through a server's OpenAI-compatible completions API.

perplexity        exp(mean negative log-likelihood) of the eval texts' tokens under the served model,
                  read from the server's prompt logprobs (vLLM `prompt_logprobs`; OpenAI-style
                  `echo` + `logprobs` as a fallback). Token-weighted over all samples; the first
                  token (BOS) has no prediction and is left out.
exact_match       share of tasks whose greedy first output line equals the answer (whitespace aside).
greedy_agreement  the greedy output tokens per prompt; the share equal to a reference's is computed
                  when the two are compared (see verdict.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Any

import aiohttp
from pydantic import BaseModel

from servesweep import controlplane
from servesweep.errors import MeasurementError
from servesweep.quality.gate.spec import GateSpec
from servesweep.quality.generate import greedy_completion, post_json

CONCURRENT_REQUESTS = 8


class GateMeasurementError(MeasurementError):
    """The metric could not be measured (server error, missing logprobs, dead server)."""


# reference.json and gate-measurement.json (and the measurement inside gate.json). Version 1:
# files written before the field existed are the same shape.
MEASUREMENT_SCHEMA_VERSION = 1


class Measurement(BaseModel):
    """One measurement of the gate metric: reference.json, gate-measurement.json."""

    schema_version: int = MEASUREMENT_SCHEMA_VERSION
    metric: str
    value: float | None  # None for greedy_agreement until compared with a reference
    fingerprint: dict[str, Any]
    target: dict[str, Any]  # url, model, precision (when known)
    samples: list[dict[str, Any]]
    measured_at: str


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return await post_json(session, url, payload)
    except MeasurementError as exc:
        raise GateMeasurementError(str(exc)) from None


def _prompt_token_logprobs(choice: dict[str, Any]) -> list[float] | None:
    """Log-probabilities of prompt tokens 2..n from either response shape, or None if absent."""
    entries = choice.get("prompt_logprobs")
    if entries:
        ids = choice.get("prompt_token_ids")
        values = []
        for i, entry in enumerate(entries[1:], 1):
            if not entry:
                return None
            # The dict holds the prompt token plus any top-k; pick the prompt token's entry.
            key = str(ids[i]) if ids else next(iter(entry))
            values.append(entry[key]["logprob"])
        return values
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if logprobs and logprobs[0] is None:  # echo: the prompt's logprobs come first
        return [float(x) for x in logprobs[1:]]
    return None


async def _perplexity_sample(session, url: str, model: str, sample: dict[str, Any]) -> dict[str, Any]:
    body = await _post(session, url, {"model": model, "prompt": sample["text"], "max_tokens": 1,
                                      "temperature": 0.0, "prompt_logprobs": 0, "return_token_ids": True})
    values = _prompt_token_logprobs(body["choices"][0])
    if values is None:  # not vLLM: the OpenAI legacy way, the prompt echoed with its logprobs
        body = await _post(session, url, {"model": model, "prompt": sample["text"], "max_tokens": 1,
                                          "temperature": 0.0, "echo": True, "logprobs": 0})
        values = _prompt_token_logprobs(body["choices"][0])
    if not values:
        raise GateMeasurementError("the server returned no prompt logprobs; perplexity needs vLLM's "
                                   "`prompt_logprobs` or OpenAI's `echo` with `logprobs`")
    if any(not math.isfinite(v) for v in values):
        raise GateMeasurementError(f"sample {sample.get('id')}: non-finite prompt logprob from the server")
    # A context shorter than the sample would silently measure fewer tokens: the count is stored
    # and compared with the reference's.
    return {"id": sample.get("id"), "nll_sum": -sum(values), "tokens": len(values)}


async def _generate(session, url: str, model: str, spec: GateSpec, prompt: str) -> dict[str, Any]:
    d = spec.method.decoding
    try:
        return await greedy_completion(session, url.removesuffix("/v1/completions"), model, prompt, d.max_tokens,
                                       temperature=d.temperature, seed=spec.method.seed, stop=d.stop,
                                       ignore_eos=spec.metric == "greedy_agreement")
    except MeasurementError as exc:
        raise GateMeasurementError(str(exc)) from None


async def _sample(session, url: str, model: str, spec: GateSpec, sample: dict[str, Any]) -> dict[str, Any]:
    if spec.metric == "perplexity":
        return await _perplexity_sample(session, url, model, sample)
    out = await _generate(session, url, model, spec, sample["prompt"])
    if spec.metric == "exact_match":
        line = out["text"].split("\n", 1)[0].strip()
        return {"id": sample.get("id"), "output": line, "correct": line == sample["answer"].strip()}
    if not out["tokens"]:
        raise GateMeasurementError("the server returned no output tokens in `logprobs.tokens`; "
                                   "greedy_agreement needs them")
    return {"id": sample.get("id"), "tokens": out["tokens"]}


def metric_value(metric: str, samples: list[dict[str, Any]]) -> float | None:
    if metric == "perplexity":
        tokens = sum(s["tokens"] for s in samples)
        return math.exp(sum(s["nll_sum"] for s in samples) / tokens)
    if metric == "exact_match":
        return sum(s["correct"] for s in samples) / len(samples)
    return None


async def measure(spec: GateSpec, samples: list[dict[str, Any]], base_url: str, model: str,
                  precision: str | None = None, timeout_s: float = 300.0) -> Measurement:
    url = base_url.rstrip("/") + "/v1/completions"
    limit = asyncio.Semaphore(CONCURRENT_REQUESTS)
    async with controlplane.session(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one(sample: dict[str, Any]) -> dict[str, Any]:
            async with limit:
                return await _sample(session, url, model, spec, sample)

        results = await asyncio.gather(*(one(s) for s in samples))
    return Measurement(
        metric=spec.metric, value=metric_value(spec.metric, results), fingerprint=spec.fingerprint(),
        target={"url": base_url, "model": model, "precision": precision}, samples=results,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(),
    )
