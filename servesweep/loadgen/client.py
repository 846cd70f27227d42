"""One OpenAI-compatible request, timed chunk by chunk.

This is the load generator's hot path: per streamed chunk it takes one clock reading, splits
SSE events and decodes one small JSON object. No logging, no per-chunk allocation beyond that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from servesweep.loadgen.records import (
    ERROR_CANCELLED,
    ERROR_CONNECTION,
    ERROR_HTTP,
    ERROR_STREAM,
    ERROR_TIMEOUT,
    RequestRecord,
)
from servesweep.loadgen.sse import DONE, SSEParser
from servesweep.loadgen.workload import PromptItem, Workload

_clock = time.perf_counter
# orjson-encoded bodies: aiohttp's json= would run the stdlib encoder on every request.
JSON_HEADERS = {"Content-Type": "application/json"}


async def _on_headers_sent(session: Any, ctx: Any, params: Any) -> None:
    target = ctx.trace_request_ctx
    if target is not None:
        record, t0 = target
        record.wire_s = _clock() - t0


def wire_time_tracing() -> aiohttp.TraceConfig:
    """Stamps `RequestRecord.wire_s` when aiohttp has written a request's headers."""
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_on_headers_sent)
    return config


def build_payload(model: str, item: PromptItem, workload: Workload) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "max_tokens": item.output_len, "stream": workload.stream}
    if workload.ignore_eos:
        # vLLM and TensorRT-LLM honour ignore_eos, pinning the output length to max_tokens.
        payload["ignore_eos"] = True
    if workload.stream:
        payload["stream_options"] = {"include_usage": True}
    if workload.endpoint == "chat":
        messages = [{"role": "user", "content": item.text}]
        if item.system:
            messages.insert(0, {"role": "system", "content": item.system})
        payload["messages"] = messages
    else:
        payload["prompt"] = item.text
    return payload


def endpoint_path(workload: Workload) -> str:
    return "/v1/chat/completions" if workload.endpoint == "chat" else "/v1/completions"


def _choice_text(choice: dict[str, Any]) -> str | None:
    """Text of a choice, or None for a chunk that carries no generated token (a role header)."""
    text = choice.get("text")
    if text is not None:
        return text
    delta = choice.get("delta")
    if delta is None:
        message = choice.get("message")
        return message.get("content") if message else None
    content = delta.get("content")
    if "role" in delta and not content:
        return None
    return content if content is not None else ""


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err if err is not None else obj)


async def send_request(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    record: RequestRecord,
    t0: float,
    keep_text: bool = False,
) -> None:
    """Send one request and fill `record` in place (times relative to `t0`)."""
    arrivals = record.chunk_arrivals_s
    pieces: list[str] | None = [] if keep_text else None
    record.sent_s = _clock() - t0
    try:
        async with session.post(url, data=orjson.dumps(payload), headers=JSON_HEADERS,
                                trace_request_ctx=(record, t0)) as resp:
            record.http_status = resp.status
            if resp.status != 200:
                body = await resp.read()
                record.error_kind = ERROR_HTTP
                try:
                    record.error_message = _error_text(orjson.loads(body))
                except orjson.JSONDecodeError:
                    record.error_message = body[:500].decode(errors="replace") or resp.reason
                record.end_s = _clock() - t0
                return
            if not payload.get("stream"):
                body = await resp.read()
                record.end_s = now = _clock() - t0
                obj = orjson.loads(body)
                if "error" in obj:
                    record.error_kind, record.error_message = ERROR_STREAM, _error_text(obj)
                    return
                usage = obj.get("usage") or {}
                record.prompt_tokens = usage.get("prompt_tokens")
                record.completion_tokens = usage.get("completion_tokens")
                # Without streaming, the whole answer arrives at once: TTFT is the e2e latency.
                record.first_token_s = now
                if keep_text and obj.get("choices"):
                    record.output_text = _choice_text(obj["choices"][0])
                return
            parser = SSEParser()
            done = False
            async for chunk in resp.content.iter_any():
                now = _clock() - t0
                for data in parser.feed(chunk):
                    if data == DONE:
                        done = True
                        continue
                    obj = orjson.loads(data)
                    choices = obj.get("choices")
                    if choices:
                        first = choices[0]
                        text = first.get("text")  # completions: skip the general lookup per token
                        if text is None:
                            text = _choice_text(first)
                        if text is not None:
                            if not arrivals:
                                record.first_token_s = now
                            arrivals.append(now)
                            if pieces is not None:
                                pieces.append(text)
                    elif "error" in obj:
                        record.error_kind, record.error_message = ERROR_STREAM, _error_text(obj)
                    usage = obj.get("usage")
                    if usage:
                        record.prompt_tokens = usage.get("prompt_tokens")
                        record.completion_tokens = usage.get("completion_tokens")
            for data in parser.flush():
                done = done or data == DONE
            record.end_s = _clock() - t0
            if pieces is not None:
                record.output_text = "".join(pieces)
            if record.error_kind is None and not done:
                record.error_kind = ERROR_STREAM
                record.error_message = "stream ended without 'data: [DONE]' (server closed the connection early)"
    except asyncio.CancelledError:
        record.error_kind, record.error_message = ERROR_CANCELLED, "cancelled before completion"
        record.end_s = _clock() - t0
        raise
    except asyncio.TimeoutError:
        record.error_kind, record.error_message = ERROR_TIMEOUT, "request timed out"
        record.end_s = _clock() - t0
    except orjson.JSONDecodeError as exc:
        record.error_kind, record.error_message = ERROR_STREAM, f"malformed JSON in stream: {exc}"
        record.end_s = _clock() - t0
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        record.error_kind, record.error_message = ERROR_STREAM, f"{type(exc).__name__}: {exc}"
        record.end_s = _clock() - t0
    except (aiohttp.ClientError, OSError) as exc:
        record.error_kind, record.error_message = ERROR_CONNECTION, f"{type(exc).__name__}: {exc}"
        record.end_s = _clock() - t0
