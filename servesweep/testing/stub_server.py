"""A stand-in OpenAI-compatible server whose timings are known, for tests and benchmarks.

It streams `max_tokens` chunks per request after an injected time to first token and with an
injected gap between chunks, and reports exact `usage`. Failure modes reproduce what real
servers do wrong (`StubBehaviour.mode`, at chunk `fail_after_chunks`):
  malformed     a chunk that is not valid JSON
  error_event   an OpenAI error event, then [DONE]
  drop          the connection closed before [DONE]
  http_error    HTTP 400 with an OpenAI error body
  inject        the raw `inject` payload sent as one more event; the stream then goes on
  empty_deltas  chunks that carry no token: before the first token (`delta: {}`, `content: null`;
                completions: `text: ""`) and a last one with only the finish_reason; the token at
                `fail_after_chunks` has empty text (a special token, as vLLM streams it)
  hang          completion requests are never answered (until the server shuts down)
  reset         the connection reset (TCP RST) right after chunk `fail_after_chunks` was written,
                on every `reset_every`-th completion request (1: all of them)
  held_open     the whole stream and `data: [DONE]`, then the response is held open (no last
                chunk, no close) until the server shuts down
  html          a 200 answer that is an HTML page (a web server or proxy in front of the API)
  truncate      on every `reset_every`-th completion request, the answer ends well-formed after
                `fail_after_chunks` tokens: finish_reason "stop", usage counting what was sent, [DONE]
                (a server that interrupts a request in flight, as llama.cpp's Python server did)
  endless_line  one `data:` line that never ends: 1 MiB pieces without a line break, until shutdown
  stall         `fail_after_chunks` tokens, then nothing (the connection held open) until shutdown
  gzip          the whole stream gzip-compressed (Content-Encoding: gzip), whatever was asked
Other knobs: `usage=False` leaves usage out of every answer; `tokenize_answers=N` answers that
many /tokenize calls, then never answers one; `models_body` replaces the /v1/models answer;
`redirect_paths` answer HTTP 307 to `redirect_to` + the path; `api_key` answers every route but
/health with HTTP 401 unless the request carries `Authorization: Bearer <api_key>` (vLLM's
--api-key; or Basic for the user "user" with it as the password), and counts the requests that did (`authorized`) and did not (`unauthorized`).
Its tokenizer counts one token per character (plus one BOS), so `/tokenize` and `/detokenize`
round-trip exactly.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiohttp import web

BOS_ID = 1


@dataclass
class StubBehaviour:
    ttft_s: float = 0.0
    itl_s: float = 0.0
    mode: str = "ok"  # ok | malformed | error_event | drop | http_error | inject | empty_deltas | hang
    #                   | reset | held_open | html
    fail_after_chunks: int = 2
    max_model_len: int = 4096
    model: str = "stub-model"
    inject: str = ""  # mode "inject": the data payload of the extra event
    usage: bool = True
    tokenize_answers: int | None = None  # None: answer every /tokenize call
    models_body: str | None = None  # raw JSON for /v1/models instead of the model list
    tokenize_calls: int = 0  # not a knob: how many /tokenize calls have arrived so far
    # Serve /metrics with vLLM's gauge names: requests in flight as the running batch, a KV use of
    # `kv_per_request` of the pool per running request (capped at 1), and vLLM's preemption counter,
    # which rises by one for every request that arrives while more than `preempt_above` are in
    # flight (None: never). Scripted, so an onset search has known onsets.
    metrics: bool = False
    kv_per_request: float = 0.01
    preempt_above: int | None = None
    # TTFT grows by this much per request already in flight when one arrives (a server's queue).
    ttft_per_in_flight_s: float = 0.0
    preemptions: int = 0  # not a knob: the preemption counter so far
    reset_every: int = 1  # mode "reset": which completion requests are reset (every N-th)
    redirect_paths: tuple[str, ...] = ()  # paths answered with a 307 to redirect_to + path
    redirect_to: str = ""
    completion_calls: int = 0  # not a knob: how many completion requests have arrived so far
    dev_mode: bool = False  # serve vLLM's dev-mode POST /reset_prefix_cache
    prefix_resets: int = 0  # not a knob: how many /reset_prefix_cache calls have arrived
    api_key: str | None = None  # every route but /health wants `Authorization: Bearer <api_key>`
    authorized: int = 0  # not a knob: requests that carried the key
    unauthorized: int = 0  # not a knob: requests refused for want of it


def _count_prompt(body: dict) -> tuple[int, str]:
    if "messages" in body:
        text = "".join(m.get("content", "") for m in body["messages"])
    else:
        text = body.get("prompt", "")
    return len(text) + 1, text


def build_app(behaviour: StubBehaviour | None = None) -> web.Application:
    b = behaviour or StubBehaviour()
    app = web.Application()
    # Requests told to hang wait on this; shutting the server down releases them.
    release = asyncio.Event()

    async def on_shutdown(_: web.Application) -> None:
        release.set()

    app.on_shutdown.append(on_shutdown)

    async def hang() -> web.Response:
        await release.wait()
        return web.json_response({"error": {"message": "stub shutting down"}}, status=503)
    in_flight = [0]

    async def models(_: web.Request) -> web.Response:
        if b.models_body is not None:
            return web.Response(text=b.models_body, content_type="application/json")
        return web.json_response({"object": "list", "data": [
            {"id": b.model, "object": "model", "max_model_len": b.max_model_len, "root": None}]})

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def tokenize(request: web.Request) -> web.Response:
        b.tokenize_calls += 1
        if b.tokenize_answers is not None and b.tokenize_calls > b.tokenize_answers:
            return await hang()
        body = await request.json()
        ids = [ord(c) for c in body.get("prompt", "")]
        if body.get("add_special_tokens", True):
            ids = [BOS_ID] + ids
        return web.json_response({"tokens": ids, "count": len(ids), "max_model_len": b.max_model_len})

    async def detokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": "".join(chr(i) for i in body["tokens"] if i != BOS_ID)})

    async def metrics(_: web.Request) -> web.Response:
        labels = f'{{model_name="{b.model}",engine="0"}}'
        return web.Response(text=(
            f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {in_flight[0]}\n"
            f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{labels} 0\n"
            f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{labels} "
            f"{min(in_flight[0] * b.kv_per_request, 1.0)}\n"
            f"# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total{labels} {b.preemptions}\n"))

    async def complete(request: web.Request) -> web.StreamResponse:
        queued = in_flight[0]
        in_flight[0] += 1
        if b.preempt_above is not None and in_flight[0] > b.preempt_above:
            b.preemptions += 1
        try:
            return await _complete(request, queued * b.ttft_per_in_flight_s)
        finally:
            in_flight[0] -= 1

    async def _complete(request: web.Request, queued_s: float = 0.0) -> web.StreamResponse:
        b.completion_calls += 1
        call = b.completion_calls
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        n_out = int(body.get("max_tokens", 16))
        prompt_tokens, _ = _count_prompt(body)
        if b.mode == "http_error" or prompt_tokens + n_out > b.max_model_len:
            msg = (f"This model's maximum context length is {b.max_model_len} tokens. However, you requested "
                   f"{prompt_tokens + n_out} tokens.") if b.mode != "http_error" else "stub refuses this request"
            return web.json_response({"error": {"message": msg, "type": "BadRequestError", "code": 400}}, status=400)
        if b.mode == "hang":
            return await hang()
        if b.mode == "html":
            return web.Response(text="<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
                                     "<body>It works.</body></html>\n", content_type="text/html")
        if b.mode == "truncate" and call % max(b.reset_every, 1) == 0:
            n_out = min(n_out, b.fail_after_chunks)  # cut short: what is sent is all the answer has
            finish = "stop"
        else:
            finish = "length"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out, "total_tokens": prompt_tokens + n_out}
        if not body.get("stream"):
            await asyncio.sleep(b.ttft_s + b.itl_s * max(n_out - 1, 0))
            text = "x" * n_out
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
            choice["finish_reason"] = finish
            answer = {"id": "stub", "choices": [choice]}
            if b.usage:
                answer["usage"] = usage
            return web.json_response(answer)
        if b.mode == "gzip":
            return _gzip_stream(chat, n_out, usage if b.usage else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if b.mode == "endless_line":
            await resp.write(b"data: ")
            while not release.is_set():
                await resp.write(b"x" * (1 << 20))
            return resp
        if chat:
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n')
        chunk = (b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n' if chat
                 else b'data: {"choices":[{"index":0,"text":"x"}]}\n\n')
        empty = (b'data: {"choices":[{"index":0,"delta":{"content":""}}]}\n\n' if chat
                 else b'data: {"choices":[{"index":0,"text":""}]}\n\n')
        if b.mode == "empty_deltas":
            # What some servers send while the prompt is still being processed: no token yet.
            await resp.write(b'data: {"choices":[{"index":0,"delta":{}}]}\n\n'
                             b'data: {"choices":[{"index":0,"delta":{"content":null}}]}\n\n' if chat else empty)
        await asyncio.sleep(b.ttft_s + queued_s)
        for i in range(n_out):
            if i and b.itl_s:
                await asyncio.sleep(b.itl_s)
            if i == b.fail_after_chunks and b.mode == "stall":
                await release.wait()  # the stream stops mid-answer; the connection stays open
                return resp
            if i == b.fail_after_chunks and b.mode == "empty_deltas":
                await resp.write(empty)  # a generated token whose text is empty
                continue
            if i == b.fail_after_chunks and b.mode == "inject":
                await resp.write(b"data: " + b.inject.encode() + b"\n\n")
            elif i == b.fail_after_chunks and b.mode != "ok":
                if b.mode == "malformed":
                    await resp.write(b'data: {"choices": [ {"text": "x"\n\n')
                elif b.mode == "error_event":
                    await resp.write(b'data: {"error": {"message": "engine died mid-stream", "code": 500}}\n\n')
                    await resp.write(b"data: [DONE]\n\n")
                    return resp
                elif b.mode == "drop":
                    request.transport.close()
                    return resp
                elif b.mode == "reset" and call % max(b.reset_every, 1) == 0:
                    await resp.write(chunk)
                    _reset(request)
                    return resp
            await resp.write(chunk)
        if b.mode in ("empty_deltas", "truncate"):
            last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
            last["finish_reason"] = finish
            await resp.write(b"data: " + json.dumps({"choices": [last]}).encode() + b"\n\n")
        if b.usage:
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        if b.mode == "held_open":
            await release.wait()  # the message is never ended: no last chunk, no close
        return resp

    @web.middleware
    async def redirects(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path in b.redirect_paths:
            raise web.HTTPTemporaryRedirect(b.redirect_to.rstrip("/") + request.path)
        return await handler(request)

    @web.middleware
    async def api_key(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if b.api_key is not None and request.path != "/health":
            if request.headers.get("Authorization") not in (f"Bearer {b.api_key}", _basic(b.api_key)):
                b.unauthorized += 1
                return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
            b.authorized += 1
        return await handler(request)

    app.middlewares.append(redirects)
    app.middlewares.append(api_key)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/v1/completions", complete)
    if b.dev_mode:
        async def reset_prefix(_: web.Request) -> web.Response:
            b.prefix_resets += 1
            return web.Response(status=200)

        app.router.add_post("/reset_prefix_cache", reset_prefix)
    app.router.add_post("/v1/chat/completions", complete)
    if b.metrics:
        app.router.add_get("/metrics", metrics)
    return app


def _basic(password: str) -> str:
    """`Authorization: Basic` for any user with this password (credentials given in the URL)."""
    import base64

    return "Basic " + base64.b64encode(f"user:{password}".encode()).decode()


def _gzip_stream(chat: bool, n_out: int, usage: dict | None) -> web.Response:
    """A whole event stream, gzip-compressed, as a proxy that compresses every answer sends it."""
    import gzip

    chunk = ('{"choices":[{"index":0,"delta":{"content":"x"}}]}' if chat else '{"choices":[{"index":0,"text":"x"}]}')
    events = [chunk] * n_out + ([json.dumps({"choices": [], "usage": usage})] if usage else []) + ["[DONE]"]
    body = gzip.compress("".join(f"data: {e}\n\n" for e in events).encode())
    return web.Response(body=body, headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"})


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), as a crashing or overloaded server does."""
    import socket
    import struct

    sock = request.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()


def main() -> None:
    """`python -m servesweep.testing.stub_server --port P [--ttft S] [--itl S]`: serve until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--itl", type=float, default=0.0)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--metrics", action="store_true", help="serve /metrics with vLLM's gauge names")
    parser.add_argument("--api-key", default=None, help="answer 401 unless 'Authorization: Bearer KEY' is sent")
    parser.add_argument("--fail-after-chunks", type=int, default=2)
    parser.add_argument("--reset-every", type=int, default=1)
    args = parser.parse_args()
    behaviour = StubBehaviour(ttft_s=args.ttft, itl_s=args.itl, mode=args.mode, metrics=args.metrics,
                              api_key=args.api_key, fail_after_chunks=args.fail_after_chunks,
                              reset_every=args.reset_every)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(build_app(behaviour), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
