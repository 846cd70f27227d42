"""The timing cross-check of a load level: the client's timings against the server's, and against
each other.

A server that publishes latency histograms (vLLM: time to first token, inter-token latency,
e2e request latency) measures the same requests from its side. Their means over a level are
read from the histograms' sums and counts at the level's start and end (see
servesweep.backends.telemetry) and set beside the client's means. A level is marked `suspect`,
with one reason per failed rule, when:

- e2e or inter-token means differ from the server's by more than 10 % and 2 ms: the client adds
  only network and parsing time (a client starved of CPU, or a clock problem). The server's
  inter-token latency is per token; the client's figure set beside it is the stream's decode time
  per token (`itl_per_token_ms`), not the mean gap between chunks: under load vLLM's front-end
  packs the tokens that piled up into one chunk (1.2-1.3 tokens per chunk at c96-c128 on the H200,
  2026-12-02, where the per-token figure matched the server's to 0.3 % and the per-chunk gap read
  23 % more).
- the client's TTFT mean is below the server's by more than 2 ms: the client cannot see a token
  before the server made it.
- the client's TTFT mean exceeds the server's by more than 10 ms + 25 % of the server's. The
  server's clock starts after its API front-end has parsed and tokenized the request and stops
  when the token leaves the engine, so the client's TTFT is larger by the front-end's time: 2 ms
  measured on the CPU build at one stream, growing with the front-end's queue under load (hence
  the share of the server's figure). More than that is what counting the first *visible* text
  instead of the first token did (1.8-2.7x on the H200, 2026-12-02), or a client that is late.
- more than half of the output tokens arrived without visible text: the time to first text then
  says little, and the load generator's tokenizer may not match the model (prompt lengths too).
- the TPOT mean and the per-token decode time seen in the stream (`itl_per_token_ms`) differ by
  more than 20 % and 1 ms: both divide the same stream's decode time by its tokens, so they part
  only when the first token was timed at the wrong chunk or tokens were miscounted.

The last two need no server histograms; the entry exists whenever a rule could be applied.
"""

from __future__ import annotations

from typing import Any

REL_TOLERANCE = 0.10
ABS_TOLERANCE_MS = 2.0
TTFT_EXCESS_ABS_MS = 10.0
TTFT_EXCESS_REL = 0.25
MAX_TEXTLESS_FRACTION = 0.5
TPOT_REL_TOLERANCE = 0.20
TPOT_ABS_TOLERANCE_MS = 1.0


def _disagree(client: float, server: float, rel: float = REL_TOLERANCE, abs_ms: float = ABS_TOLERANCE_MS) -> bool:
    diff = abs(client - server)
    return diff > abs_ms and diff > rel * server


def ttft_excess_bound_ms(server_ttft_ms: float) -> float:
    """How far the client's TTFT mean may lie above the server's before the level is suspect."""
    return TTFT_EXCESS_ABS_MS + TTFT_EXCESS_REL * server_ttft_ms


def cross_check(level_summary: dict[str, Any], telemetry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cross-check entry of one level, or None when no rule could be applied."""
    server = (telemetry or {}).get("server_latency_mean_ms") or {}
    has_server = any(v is not None for v in server.values())
    client = {name: (level_summary.get(f"{name}_ms") or {}).get("mean") for name in ("ttft", "itl", "e2e", "tpot")}
    if level_summary.get("itl_per_token_ms") is not None:
        client["itl"] = level_summary["itl_per_token_ms"]
    reasons: list[str] = []
    offset = None
    if has_server:
        for name, label in (("e2e", "e2e"), ("itl", "inter-token")):
            c, s = client[name], server.get(name)
            if c is not None and s is not None and _disagree(c, s):
                reasons.append(f"{label} mean: client {c:.2f} ms vs server {s:.2f} ms")
        if client["ttft"] is not None and server.get("ttft") is not None:
            offset = client["ttft"] - server["ttft"]
            if offset < -ABS_TOLERANCE_MS:
                reasons.append(f"TTFT mean: client {client['ttft']:.2f} ms is below the server's {server['ttft']:.2f} ms")
            elif offset > ttft_excess_bound_ms(server["ttft"]):
                reasons.append(
                    f"TTFT mean: client {client['ttft']:.2f} ms exceeds the server's {server['ttft']:.2f} ms by "
                    f"{offset:.1f} ms (bound {ttft_excess_bound_ms(server['ttft']):.1f} ms): the first token was "
                    "timed late, or the server's front-end queues requests before its clock starts")
    textless = level_summary.get("tokens_without_text_fraction")
    if textless is not None and textless > MAX_TEXTLESS_FRACTION:
        reasons.append(
            f"{textless:.0%} of the output tokens arrived without visible text: the time to first text is not "
            "TTFT, and the load generator's tokenizer may not cover the model's vocabulary")
    per_token = level_summary.get("itl_per_token_ms")
    if client["tpot"] is not None and per_token is not None and _disagree(
            client["tpot"], per_token, TPOT_REL_TOLERANCE, TPOT_ABS_TOLERANCE_MS):
        reasons.append(f"TPOT mean {client['tpot']:.2f} ms vs the stream's decode time per token "
                       f"{per_token:.2f} ms: the first token or the token count is off")
    if not has_server and textless is None and per_token is None:
        return None
    # The server's histograms count every request it finished in the window; the client's means
    # cover its measured requests. A difference says the two means are not over the same requests.
    server_n = (telemetry or {}).get("server_requests_finished")
    client_n = (level_summary.get("completed") or 0) + (level_summary.get("failed") or 0)
    return {"client_mean_ms": client, "server_mean_ms": server, "ttft_offset_ms": offset,
            "server_requests": server_n, "client_requests": client_n,
            "suspect": bool(reasons), "reasons": reasons}
