"""One greedy completion with its tokens and top-k logprobs: the request both quality probes
send (output drift across precisions, and the generating accuracy-gate metrics)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from servesweep.controlplane import NO_REDIRECTS, is_redirect, redirect_error
from servesweep.errors import MeasurementError


async def post_json(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST and return the JSON answer; HTTP errors and dead servers become MeasurementError."""
    try:
        async with session.post(url, json=payload, **NO_REDIRECTS) as resp:
            if is_redirect(resp.status):
                raise MeasurementError(redirect_error(url, resp.status, resp.headers.get("Location")))
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise MeasurementError(f"{url}: HTTP {resp.status}: {str(body)[:300]}")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise MeasurementError(f"{url}: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise MeasurementError(f"{url}: answer without choices: {str(body)[:300]}")
    return body


async def greedy_completion(
    session: aiohttp.ClientSession, base_url: str, model: str, prompt: str, max_tokens: int, *,
    top_logprobs: int = 0, temperature: float = 0.0, seed: int | None = None,
    stop: list[str] | None = None, ignore_eos: bool = False,
) -> dict[str, Any]:
    """`{"text", "tokens", "top_logprobs"}` of one completion (tokens as the server spells them)."""
    payload: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                               "temperature": temperature, "logprobs": top_logprobs}
    if seed is not None:
        payload["seed"] = seed
    if stop:
        payload["stop"] = stop
    if ignore_eos:
        payload["ignore_eos"] = True  # pinned output length: two runs decode the same number of tokens
    body = await post_json(session, base_url.rstrip("/") + "/v1/completions", payload)
    choice = body["choices"][0]
    logprobs = choice.get("logprobs") or {}
    return {"text": choice.get("text", ""), "tokens": logprobs.get("tokens") or [],
            "top_logprobs": logprobs.get("top_logprobs") or []}
