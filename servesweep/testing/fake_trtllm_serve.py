"""A stand-in for TensorRT-LLM's `trtllm-serve`, for tests: same command line, same options-file
checks, same endpoints, no GPU.

    python servesweep/testing/fake_trtllm_serve.py MODEL [--backend pytorch] --host H --port P \
        [--max_batch_size N] ... --config OPTIONS.yaml
    python servesweep/testing/fake_trtllm_serve.py --version

It accepts the options of the release named by FAKE_TRTLLM_VERSION (default 1.2.0) and refuses
the others the way trtllm-serve does: an unknown flag exits 2 with click's "No such option", an
options-file key that release's strict argument model does not know exits 1 with pydantic's
"Extra inputs are not permitted". Flags: `--config` from 1.2.0 (`--extra_llm_api_options`
always), `--backend tensorrt` from 1.0.0. Options-file keys: `kv_cache_config.dtype` and
`return_perf_metrics` from 1.0.0, top-level `kv_cache_dtype` before it, `enable_iter_perf_stats`
on the PyTorch backend only.

Endpoints: /health, /version, /v1/models, /v1/completions and /v1/chat/completions (SSE
streaming, usage in the last chunk when asked), /metrics (a JSON list of iteration statistics in
TensorRT-LLM's shape, emptied by every GET; empty unless iteration statistics are on), and
/prometheus/metrics (trtllm_* histograms and counters; mounted with return_perf_metrics).
Requests beyond --max_batch_size wait in a queue; an engine loop records one iteration every
FAKE_TRTLLM_ITER_S while anything is active or queued.

Environment:
    FAKE_TRTLLM_VERSION          release to emulate (default 1.2.0)
    FAKE_TRTLLM_NO_VERSION_FLAG  1: `--version` is refused like the real click CLI does
    FAKE_TRTLLM_TTFT / _ITL      seconds to first token / between tokens (0.02 / 0.005)
    FAKE_TRTLLM_ITER_S           engine iteration period (default FAKE_TRTLLM_ITL)
    FAKE_TRTLLM_START_DELAY      seconds before listening (0.2)
    FAKE_TRTLLM_KV_BLOCKS        KV pool blocks (512); FAKE_TRTLLM_TOKENS_PER_BLOCK (32)
    FAKE_TRTLLM_PAUSED           numPausedRequests reported while requests run (0)
    FAKE_TRTLLM_FAIL_AT_START    oom | engine | quant | kv: print that failure's log line, exit 1
    FAKE_TRTLLM_CRASH_AFTER      N: the process dies once N completion requests have arrived
    FAKE_TRTLLM_UNHEALTHY_AFTER  N: after N requests the engine "fails": /health 503, requests 500
    FAKE_TRTLLM_JSON_METRICS     0: /metrics stays empty and /prometheus/metrics carries the
                                 iteration gauges (releases whose own collector drains the queue)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import re
import signal
import socket
import sys
import time
from typing import Any

ENV = os.environ.get


def _version_key(text: str) -> tuple[int, int, int, int, int]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)(?:\.?(rc|a|b|dev|post)(\d+))?", text)
    if not m:
        return (0, 0, 0, 0, 0)
    stage = {"dev": 0, "a": 1, "b": 2, "rc": 3, None: 4, "post": 5}[m.group(4)]
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), stage, int(m.group(5) or 0))


VERSION = ENV("FAKE_TRTLLM_VERSION", "1.2.0")
V = _version_key(VERSION)
V1 = (1, 0, 0, 4, 0)
CONFIG_FLAG = (1, 2, 0, 4, 0)


def log(line: str) -> None:
    print(line, flush=True)


def die(line: str, code: int = 1) -> None:
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


class ClickLikeParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # click's wording and exit status
        m = re.search(r"unrecognized arguments: (\S+)", message)
        if m:
            die(f"Usage: trtllm-serve [OPTIONS] MODEL\nTry 'trtllm-serve --help' for help.\n\n"
                f"Error: No such option: {m.group(1)}", 2)
        die(f"Usage: trtllm-serve [OPTIONS] MODEL\n\nError: Invalid value: {message}", 2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ClickLikeParser(prog="trtllm-serve", add_help=False)
    p.add_argument("model")
    p.add_argument("--tokenizer")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8000)
    backends = ["pytorch", "tensorrt", "trt", "_autodeploy"] if V >= V1 else ["pytorch"]
    p.add_argument("--backend", choices=backends, default="pytorch" if V >= V1 else None)
    p.add_argument("--log_level", default="info")
    p.add_argument("--max_beam_width", type=int, default=1)
    p.add_argument("--max_batch_size", type=int, default=2048)
    p.add_argument("--max_num_tokens", type=int, default=8192)
    p.add_argument("--max_seq_len", type=int)
    p.add_argument("--tp_size", "--tensor_parallel_size", dest="tp_size", type=int, default=1)
    p.add_argument("--pp_size", "--pipeline_parallel_size", dest="pp_size", type=int, default=1)
    p.add_argument("--kv_cache_free_gpu_memory_fraction", "--free_gpu_memory_fraction", dest="fraction",
                   type=float, default=0.9)
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--num_postprocess_workers", type=int, default=0)
    flags = ["--config", "--extra_llm_api_options"] if V >= CONFIG_FLAG else ["--extra_llm_api_options"]
    p.add_argument(*flags, dest="options")
    return p.parse_args(argv)


# What each release's strict LLM-argument model accepts in the options file.
def allowed_keys(backend: str) -> tuple[set[str], set[str]]:
    top = {"dtype", "kv_cache_config", "scheduler_config", "max_batch_size", "max_num_tokens", "max_seq_len",
           "tensor_parallel_size", "trust_remote_code", "iter_stats_max_iterations", "enable_chunked_prefill"}
    kv = {"free_gpu_memory_fraction", "max_tokens", "enable_block_reuse", "tokens_per_block"}
    if backend == "pytorch":
        top |= {"enable_iter_perf_stats", "print_iter_log", "cuda_graph_config"}
        if V < V1:
            top.add("kv_cache_dtype")
    else:
        top |= {"quant_config", "build_config"}
    if V >= V1:
        top |= {"return_perf_metrics", "perf_metrics_max_requests"}
        kv.add("dtype")
    return top, kv


def validate_options(path: str | None, backend: str) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    try:
        with open(path) as f:
            options = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        die(f"Error: cannot read options file {path}: {exc}")
    model_name = "TorchLlmArgs" if backend == "pytorch" else "TrtLlmArgs"
    top, kv = allowed_keys(backend)
    errors = [f"{k}\n  Extra inputs are not permitted" for k in options if k not in top]
    errors += [f"kv_cache_config.{k}\n  Extra inputs are not permitted"
               for k in (options.get("kv_cache_config") or {}) if k not in kv]
    if options.get("dtype", "auto") not in ("auto", "float16", "bfloat16", "float32", "half", "float"):
        errors.append(f"dtype\n  Input should be a valid dtype, got {options['dtype']!r}")
    if kvd := (options.get("kv_cache_config") or {}).get("dtype", options.get("kv_cache_dtype")):
        if kvd not in ("auto", "fp8", "nvfp4"):
            errors.append(f"kv_cache_config.dtype\n  Input should be 'auto', 'fp8' or 'nvfp4', got {kvd!r}")
    if errors:
        die(f"pydantic_core._pydantic_core.ValidationError: {len(errors)} validation error"
            f"{'s' if len(errors) > 1 else ''} for {model_name}\n" + "\n".join(errors))
    return options


START_FAILURES = {
    "oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
           "capacity of 79.19 GiB of which 1.02 GiB is free.",
    "engine": "[TRT] [E] IBuilder::buildSerializedNetwork: Error Code 4: Internal Error (Engine build failed)",
    "quant": "RuntimeError: FP8 block scales quantization is not supported on SM80",
    "kv": "RuntimeError: Attention window size 131072 is too large to fit even a single sequence in the KV cache",
}


def kv_bytes_per_token(model: str, options: dict[str, Any]) -> int:
    try:
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return 0
    heads = cfg.get("num_attention_heads", 1)
    head_dim = cfg.get("head_dim") or cfg.get("hidden_size", 0) // heads
    kvd = (options.get("kv_cache_config") or {}).get("dtype", options.get("kv_cache_dtype"))
    element = 1 if kvd == "fp8" else (4 if options.get("dtype") == "float32" else 2)
    return 2 * cfg.get("num_hidden_layers", 0) * (cfg.get("num_key_value_heads") or heads) * head_dim * element


class Engine:
    """Requests, the batch limit, the iteration-statistics queue and the failure modes."""

    def __init__(self, args: argparse.Namespace, options: dict[str, Any], backend: str) -> None:
        self.model = os.path.basename(os.path.normpath(args.model)) if os.path.isdir(args.model) else args.model
        self.ttft = float(ENV("FAKE_TRTLLM_TTFT", "0.02"))
        self.itl = float(ENV("FAKE_TRTLLM_ITL", "0.005"))
        self.iter_s = float(ENV("FAKE_TRTLLM_ITER_S", str(self.itl or 0.005))) or 0.005
        self.tokens_per_block = int(ENV("FAKE_TRTLLM_TOKENS_PER_BLOCK", "32"))
        max_tokens = (options.get("kv_cache_config") or {}).get("max_tokens")
        self.max_blocks = (math.ceil(max_tokens / self.tokens_per_block) if max_tokens
                           else int(ENV("FAKE_TRTLLM_KV_BLOCKS", "512")))
        self.paused = int(ENV("FAKE_TRTLLM_PAUSED", "0"))
        self.max_batch = args.max_batch_size
        self.slots = asyncio.Semaphore(self.max_batch)
        self.json_metrics = ((backend != "pytorch" or bool(options.get("enable_iter_perf_stats")))
                             and ENV("FAKE_TRTLLM_JSON_METRICS", "1") != "0")
        self.prometheus = bool(options.get("return_perf_metrics"))
        self.gauges_in_prometheus = ENV("FAKE_TRTLLM_JSON_METRICS", "1") == "0"
        self.crash_after = int(ENV("FAKE_TRTLLM_CRASH_AFTER", "0")) or None
        self.unhealthy_after = int(ENV("FAKE_TRTLLM_UNHEALTHY_AFTER", "0")) or None
        self.healthy = True
        self.received = 0
        self.queued = 0
        self.active: dict[int, int] = {}  # request id -> tokens held in the KV cache
        self.stats: collections.deque = collections.deque(maxlen=1000)  # iter_stats_max_iterations
        self.iteration = 0
        self.completed = 0
        self.wake = asyncio.Event()
        self.hist = {"ttft": [0.0, 0], "tpot": [0.0, 0], "e2e": [0.0, 0]}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.last_gauges = {"running": 0, "waiting": 0, "kv": 0.0}

    def used_blocks(self) -> int:
        return sum(math.ceil(t / self.tokens_per_block) for t in self.active.values())

    async def loop(self) -> None:
        while True:
            if not self.active and not self.queued:
                self.wake.clear()
                await self.wake.wait()
            await asyncio.sleep(self.iter_s)
            self.iteration += 1
            used = min(self.used_blocks(), self.max_blocks)
            completed, self.completed = self.completed, 0
            stat = {
                "iter": self.iteration, "iterLatencyMS": self.iter_s * 1000.0,
                "timestamp": time.strftime("%m-%d-%Y %H:%M:%S"),
                "numActiveRequests": len(self.active), "numQueuedRequests": self.queued,
                "numCompletedRequests": completed, "maxNumActiveRequests": self.max_batch,
                "gpuMemUsage": 40 * 2**30 + used * 2**20, "cpuMemUsage": 2**30, "pinnedMemUsage": 0,
                "maxBatchSizeStatic": self.max_batch, "maxBatchSizeRuntime": self.max_batch,
                "maxNumTokensRuntime": 8192,
                "kvCacheStats": {"maxNumBlocks": self.max_blocks, "freeNumBlocks": self.max_blocks - used,
                                 "usedNumBlocks": used, "tokensPerBlock": self.tokens_per_block,
                                 "allocTotalBlocks": used, "allocNewBlocks": 0, "reusedBlocks": 0,
                                 "missedBlocks": self.iteration, "cacheHitRate": 0.0},
                "inflightBatchingStats": {"numScheduledRequests": len(self.active), "numContextRequests": 0,
                                          "numGenRequests": len(self.active),
                                          "numPausedRequests": self.paused if self.active else 0,
                                          "numCtxTokens": 0, "microBatchId": 0, "avgNumDecodedTokensPerIter": 1.0},
            }
            self.last_gauges = {"running": len(self.active), "waiting": self.queued, "kv": used / self.max_blocks}
            if self.json_metrics:
                self.stats.append(stat)

    def arrive(self) -> None:
        self.received += 1
        if self.crash_after and self.received >= self.crash_after:
            log("[TensorRT-LLM][ERROR] CUDA runtime error in cudaMemcpyAsync: an illegal memory access was "
                "encountered (/src/tensorrt_llm/runtime/bufferManager.cpp:123)")
            asyncio.get_running_loop().call_later(0.05, os._exit, 1)
        if self.unhealthy_after and self.received > self.unhealthy_after and self.healthy:
            self.healthy = False
            log("[TensorRT-LLM][ERROR] Executor worker returned error: an illegal memory access was encountered")


def _prompt_text(body: dict) -> str:
    if "messages" in body:
        return "".join(str(m.get("content", "")) for m in body["messages"])
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def build_app(engine: Engine):
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        if engine.healthy:
            return web.Response(status=200)
        return web.Response(status=503, text="LLM is unavailable. Please check the server logs for more details.")

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": engine.model, "object": "model", "created": int(time.time()), "owned_by": "tensorrt_llm"}]})

    async def metrics(_: web.Request) -> web.Response:
        stats = list(engine.stats)
        engine.stats.clear()
        return web.json_response(stats)

    async def prometheus(_: web.Request) -> web.Response:
        labels = 'model_name="undefined",engine_type="undefined"'
        lines = []
        for name, key in (("time_to_first_token_seconds", "ttft"), ("time_per_output_token_seconds", "tpot"),
                          ("e2e_request_latency_seconds", "e2e")):
            total, count = engine.hist[key]
            lines += [f"# TYPE trtllm_{name} histogram",
                      f'trtllm_{name}_bucket{{le="+Inf",{labels}}} {count}.0',
                      f"trtllm_{name}_count{{{labels}}} {count}.0", f"trtllm_{name}_sum{{{labels}}} {total}"]
        lines += ["# TYPE trtllm_prompt_tokens_total counter",
                  f"trtllm_prompt_tokens_total{{{labels}}} {engine.prompt_tokens}.0",
                  "# TYPE trtllm_generation_tokens_total counter",
                  f"trtllm_generation_tokens_total{{{labels}}} {engine.generation_tokens}.0"]
        if engine.gauges_in_prometheus:
            g = engine.last_gauges
            lines += [f"trtllm_num_requests_running{{{labels}}} {g['running']}.0",
                      f"trtllm_num_requests_waiting{{{labels}}} {g['waiting']}.0",
                      f"trtllm_kv_cache_utilization{{{labels}}} {g['kv']}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        engine.arrive()
        if not engine.healthy:
            return web.json_response({"object": "error", "message": "LLM is unavailable", "type": "InternalServerError",
                                      "code": 500}, status=500)
        chat = request.path.endswith("/chat/completions")
        n_out = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        prompt_tokens = len(_prompt_text(body)) // 4 + 1
        t0 = time.perf_counter()
        engine.queued += 1
        engine.wake.set()
        await engine.slots.acquire()
        engine.queued -= 1
        rid = id(request)
        engine.active[rid] = prompt_tokens
        try:
            return await _generate(request, body, chat, n_out, prompt_tokens, rid, t0)
        finally:
            engine.active.pop(rid, None)
            engine.completed += 1
            engine.slots.release()

    async def _generate(request, body, chat, n_out, prompt_tokens, rid, t0) -> web.StreamResponse:
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{rid:x}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out, "total_tokens": prompt_tokens + n_out}
        await asyncio.sleep(engine.ttft)
        first = time.perf_counter()
        if not body.get("stream"):
            await asyncio.sleep(engine.itl * max(n_out - 1, 0))
            engine.active[rid] += n_out
            _record(engine, t0, first, n_out, prompt_tokens)
            text = "x " * n_out
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": text, "finish_reason": "length"})
            return web.json_response({"id": cid, "object": "chat.completion" if chat else "text_completion",
                                      "created": created, "model": engine.model, "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(choices: list, extra: dict | None = None) -> bytes:
            data = {"id": cid, "object": obj, "created": created, "model": engine.model, "choices": choices}
            data.update(extra or {})
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        if chat:
            await resp.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]))
        for i in range(n_out):
            if i:
                await asyncio.sleep(engine.itl)
            engine.active[rid] += 1
            last = i == n_out - 1
            finish = "length" if last else None
            choice = ({"index": 0, "delta": {"content": "x "}, "finish_reason": finish} if chat
                      else {"index": 0, "text": "x ", "finish_reason": finish})
            await resp.write(chunk([choice]))
        _record(engine, t0, first, n_out, prompt_tokens)
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(chunk([], {"usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    if engine.prometheus:
        app.router.add_get("/prometheus/metrics", prometheus)
        app.router.add_get("/prometheus/metrics/", prometheus)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    return app


def _record(engine: Engine, t0: float, first: float, n_out: int, prompt_tokens: int) -> None:
    end = time.perf_counter()
    for key, value in (("ttft", first - t0), ("e2e", end - t0)):
        engine.hist[key][0] += value
        engine.hist[key][1] += 1
    if n_out > 1:
        engine.hist["tpot"][0] += (end - first) / (n_out - 1)
        engine.hist["tpot"][1] += 1
    engine.prompt_tokens += prompt_tokens
    engine.generation_tokens += n_out


async def serve(args: argparse.Namespace, options: dict[str, Any], backend: str, sock: socket.socket) -> None:
    from aiohttp import web

    engine = Engine(args, options, backend)
    runner = web.AppRunner(build_app(engine), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    log(f"INFO:     Started server process [{os.getpid()}]")
    log(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine_task = asyncio.create_task(engine.loop())
    await stop.wait()
    log("INFO:     Shutting down")
    engine_task.cancel()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        if ENV("FAKE_TRTLLM_NO_VERSION_FLAG") == "1":
            die("Usage: trtllm-serve [OPTIONS] MODEL\nTry 'trtllm-serve --help' for help.\n\n"
                "Error: No such option: --version", 2)
        print(f"[TensorRT-LLM] TensorRT-LLM version: {VERSION}")
        return
    args = parse_args(argv)
    backend = {"trt": "tensorrt", None: "tensorrt"}.get(args.backend, args.backend)
    log(f"[TensorRT-LLM] TensorRT-LLM version: {VERSION}")
    options = validate_options(args.options, backend)
    if args.model.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(args.model)):
        die(f"OSError: {args.model} is not a local folder and is not a valid model identifier listed on "
            f"'https://huggingface.co/models'")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:  # trtllm-serve binds its port before it builds the model, and says so when it cannot
        sock.bind((args.host, args.port))
    except OSError as exc:
        die(f"RuntimeError: Failed to bind socket to {args.host}:{args.port}: {exc}")
    log(f"[{time.strftime('%m/%d/%Y-%H:%M:%S')}] [TRT-LLM] [I] Using LLM with {backend} backend")
    time.sleep(float(ENV("FAKE_TRTLLM_START_DELAY", "0.2")))
    if failure := ENV("FAKE_TRTLLM_FAIL_AT_START"):
        die(START_FAILURES[failure])
    per_block = int(ENV("FAKE_TRTLLM_TOKENS_PER_BLOCK", "32"))
    max_tokens = (options.get("kv_cache_config") or {}).get("max_tokens")
    blocks = math.ceil(max_tokens / per_block) if max_tokens else int(ENV("FAKE_TRTLLM_KV_BLOCKS", "512"))
    per_gpu = kv_bytes_per_token(args.model, options) / max(args.tp_size, 1)
    log(f"[TensorRT-LLM][INFO] Number of blocks in KV cache primary pool: {blocks}")
    log(f"[TensorRT-LLM][INFO] Number of tokens per block: {per_block}.")
    log(f"[TensorRT-LLM][INFO] [MemUsageChange] Allocated {blocks * per_block * per_gpu / 2**30:.2f} GiB for max "
        f"tokens in paged KV cache ({blocks * per_block}).")
    sock.listen(128)
    asyncio.run(serve(args, options, backend, sock))


if __name__ == "__main__":
    main()
