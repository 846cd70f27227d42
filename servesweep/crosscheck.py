"""The client-vs-server timing cross-check of a load level.

A server that publishes latency histograms (vLLM: time to first token, inter-token latency,
e2e request latency) measures the same requests from its side. Their means over a level are
read from the histograms' sums and counts at the level's start and end (see
servesweep.backends.telemetry) and set beside the client's means:

- e2e and inter-token means must agree: the client adds only network and parsing time. Where
  they differ by more than 10 % and 2 ms, the level's timing is marked `suspect` (a client
  starved of CPU, or a clock problem) and a warning is printed.
- TTFT is not flagged: the server's clock starts after its API front-end has parsed and
  tokenized the request, so the client's TTFT is larger by the front-end's time. The offset
  (client minus server) is reported; a negative offset beyond 2 ms is flagged, since the client
  cannot see a token before the server made it.
"""

from __future__ import annotations

from typing import Any

REL_TOLERANCE = 0.10
ABS_TOLERANCE_MS = 2.0


def _disagree(client: float, server: float) -> bool:
    diff = abs(client - server)
    return diff > ABS_TOLERANCE_MS and diff > REL_TOLERANCE * server


def cross_check(level_summary: dict[str, Any], telemetry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cross-check entry of one level, or None when the server published no latencies."""
    server = (telemetry or {}).get("server_latency_mean_ms") or {}
    if not any(v is not None for v in server.values()):
        return None
    client = {name: (level_summary.get(f"{name}_ms") or {}).get("mean") for name in ("ttft", "itl", "e2e")}
    reasons = []
    for name, label in (("e2e", "e2e"), ("itl", "inter-token")):
        c, s = client[name], server.get(name)
        if c is not None and s is not None and _disagree(c, s):
            reasons.append(f"{label} mean: client {c:.2f} ms vs server {s:.2f} ms")
    offset = None
    if client["ttft"] is not None and server.get("ttft") is not None:
        offset = client["ttft"] - server["ttft"]
        if offset < -ABS_TOLERANCE_MS:
            reasons.append(f"TTFT mean: client {client['ttft']:.2f} ms is below the server's {server['ttft']:.2f} ms")
    # The server's histograms count every request it finished in the window; the client's means
    # cover its measured requests. A difference says the two means are not over the same requests.
    server_n = (telemetry or {}).get("server_requests_finished")
    client_n = (level_summary.get("completed") or 0) + (level_summary.get("failed") or 0)
    return {"client_mean_ms": client, "server_mean_ms": server, "ttft_offset_ms": offset,
            "server_requests": server_n, "client_requests": client_n,
            "suspect": bool(reasons), "reasons": reasons}
