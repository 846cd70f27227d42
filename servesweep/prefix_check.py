"""Prefix-cache contamination: how much of each level the server answered from its prefix cache.

vLLM counts prefix-cache hits and queries in tokens (`vllm:prefix_cache_hits` / `_queries`);
backends/telemetry.py turns their deltas over a level's window into `prefix_cache_hit_rate`.
servesweep's synthetic prompts are unique, so a workload without a shared prefix should hit
almost nothing: more than UNINTENDED_WARN_FRAC means something reuses prompts (warm-up prompts
sent again, a dataset with repeats, a trace's shared system prompts, an earlier level's
prompts still cached) and latencies read better than a fresh workload's would.

With `--shared-prefix-len P` the intended share is P / mean prompt tokens of the level (every
request but the first finds the prefix cached; vLLM caches whole blocks, so the measured rate
can sit a block below it). Multi-turn sessions resend their context on purpose: their hits are
all intended (expected share None, no warning).
"""

from __future__ import annotations

from typing import Any

UNINTENDED_WARN_FRAC = 0.05


def level_prefix_cache(entry: dict[str, Any], shared_prefix_len: int, sessions: bool) -> dict[str, Any] | None:
    """{hit_rate, expected_share, unintended, warn} of one level summary; None without a hit rate."""
    rate = (entry.get("telemetry") or {}).get("prefix_cache_hit_rate")
    if rate is None:
        return None
    completed = entry.get("completed") or 0
    mean_prompt = (entry.get("total_prompt_tokens") or 0) / completed if completed else None
    if sessions:
        expected = None
    elif shared_prefix_len and mean_prompt:
        expected = min(1.0, shared_prefix_len / mean_prompt)
    else:
        expected = 0.0
    unintended = None if expected is None else max(0.0, rate - expected)
    return {"hit_rate": rate, "expected_share": expected, "unintended": unintended,
            "warn": unintended is not None and unintended > UNINTENDED_WARN_FRAC}


def prefix_cache_summary(levels: list[dict[str, Any]], shared_prefix_len: int, sessions: bool,
                         ) -> tuple[dict[str, Any] | None, list[str]]:
    """Per level label the prefix-cache figures, and a warning line per contaminated level."""
    out, warnings = {}, []
    for entry in levels:
        got = level_prefix_cache(entry, shared_prefix_len, sessions)
        if got is None:
            continue
        out[entry["label"]] = got
        if got["warn"]:
            intended = (f" (the shared prefix of {shared_prefix_len} tokens explains {got['expected_share']:.0%})"
                        if shared_prefix_len else "")
            warnings.append(f"level {entry['label']}: {got['hit_rate']:.0%} of prompt tokens hit the server's prefix "
                            f"cache{intended}; a workload meant to be unique is reusing prompts (warm-up prompts, "
                            "a dataset with repeats, an earlier level's prompts still cached): latencies read low")
    return (out or None), warnings


RESET_PATH = "/reset_prefix_cache"


def check_reset_target(base_url: str) -> None:
    """--reset-prefix-cache is sent to this machine's servers only, --allow-remote or not."""
    from servesweep.errors import ConfigError, TargetError
    from servesweep.loadgen.target import check_loopback

    try:
        check_loopback(base_url)
    except TargetError as exc:
        raise ConfigError("--reset-prefix-cache is sent to loopback targets only, refused: "
                          + str(exc).split(";")[0]) from None


async def reset_prefix_cache(session: Any, base_url: str) -> str | None:
    """POST vLLM's /reset_prefix_cache (served in dev mode, VLLM_SERVER_DEV_MODE=1); None when it
    was reset, else why not. Loopback targets only: the caller checks (check_loopback)."""
    import aiohttp

    url = base_url.rstrip("/") + RESET_PATH
    try:
        async with session.post(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            if resp.status == 200:
                return None
            if resp.status in (404, 405):
                return (f"the server does not offer POST {RESET_PATH} (HTTP {resp.status}; vLLM serves it only "
                        "with VLLM_SERVER_DEV_MODE=1)")
            return f"POST {url} answered HTTP {resp.status}: {(await resp.text())[:200]}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"POST {url} failed: {exc}"
