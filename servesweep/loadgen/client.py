"""One OpenAI-compatible request over the asyncio client, timed chunk by chunk.

The response's bytes reach an `Exchange` (servesweep.loadgen.exchange) straight from the
connection's protocol callback (servesweep.loadgen.http), stamped with one clock reading per read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from servesweep.loadgen.failures import failure_of
from servesweep.loadgen.http import HttpPool
from servesweep.loadgen.records import ERROR_CANCELLED, ERROR_STREAM, RequestRecord
from servesweep.loadgen.exchange import Exchange
from servesweep.loadgen.workload import PromptItem, Workload

_clock = time.perf_counter


# The usage of the whole stream at its end, and beside every chunk (vLLM, SGLang and TensorRT-LLM
# accept continuous_usage_stats): the per-chunk counts say how many tokens each chunk carries,
# which the exchange uses when a server sends them (servesweep.loadgen.exchange).
STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}
# Without per-chunk usage (`--no-chunk-usage`): for servers that refuse the field, and to measure
# what the per-chunk counts cost a server's front-end (the exchange then uses its chunk rule).
STREAM_OPTIONS_FINAL_USAGE = {"include_usage": True}


def stream_options(workload: Workload) -> dict[str, bool]:
    return STREAM_OPTIONS if workload.chunk_usage else STREAM_OPTIONS_FINAL_USAGE


def build_payload(model: str, item: PromptItem, workload: Workload) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "max_tokens": item.output_len, "stream": workload.stream}
    if workload.ignore_eos:
        # vLLM and TensorRT-LLM honour ignore_eos, pinning the output length to max_tokens.
        payload["ignore_eos"] = True
    if workload.stream:
        payload["stream_options"] = stream_options(workload)
    if workload.endpoint == "chat":
        messages = [{"role": "user", "content": item.text}]
        if item.system:
            messages.insert(0, {"role": "system", "content": item.system})
        payload["messages"] = messages
    else:
        payload["prompt"] = item.text
    return payload


def is_disconnect(record: RequestRecord) -> bool:
    """The server closed (or reset) the connection mid-response: one way a dying server fails."""
    return record.error_kind == ERROR_STREAM and (record.error_message or "").startswith(
        "server closed the connection")


def endpoint_path(workload: Workload) -> str:
    return "/v1/chat/completions" if workload.endpoint == "chat" else "/v1/completions"


async def send_request(
    pool: HttpPool,
    path: str,
    payload: dict[str, Any],
    record: RequestRecord,
    t0: float,
    keep_text: bool = False,
) -> None:
    """Send one request and fill `record` in place (times relative to `t0`)."""
    record.sent_s = _clock() - t0
    exchange = Exchange(record, t0, bool(payload.get("stream")), keep_text, bool(payload.get("ignore_eos")))
    try:
        await pool.request(pool.encode_post(path, orjson.dumps(payload)), exchange)
        return
    except asyncio.CancelledError:
        record.error_kind, record.error_message = ERROR_CANCELLED, "cancelled before completion"
        raise
    except Exception as exc:  # noqa: BLE001  (every failure is recorded; failures.py says as what)
        record.error_kind, record.error_message = failure_of(exc)
    finally:
        if record.end_s is None:
            record.end_s = _clock() - t0
