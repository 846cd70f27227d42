"""The TensorRT-LLM backend: `trtllm-serve` argv and options file, precision checks, log causes,
KV-pool size, and the launched server's handle.

The server is started as `EXECUTABLE MODEL --backend pytorch|tensorrt --host H --port P [flags]
--config OPTIONS.yaml`, a list of arguments, never through a shell. What has no flag goes into an
options file servesweep writes next to the server log: `enable_iter_perf_stats` (iteration
statistics on the JSON /metrics, PyTorch backend; the TensorRT-engine backend always collects
them), `return_perf_metrics` (mounts /prometheus/metrics with latency histograms), the model
`dtype`, the KV-cache dtype and size, the capacity-scheduler policy. trtllm-serve replaces its
own KV-cache settings by the file's `kv_cache_config` section when there is one, so the memory
fraction is written there as well as on the command line.

Which spelling a release takes is chosen from its version (servesweep.backends.trtllm_release,
where the release cutoffs and their sources are listed).

Knobs (`TrtllmConfig.knob_names`): `max_batch_size` -> --max_batch_size, `memory_fraction` ->
--kv_cache_free_gpu_memory_fraction (of the memory free after weights and buffers, not of the
whole device like vLLM's), `max_num_tokens` -> --max_num_tokens, `kv_cache_memory_bytes` ->
`kv_cache_config.max_tokens`: TensorRT-LLM sizes its pool in tokens, so the byte budget (per GPU,
as vLLM's) is converted with the model's KV bytes per token: tokens = bytes x TP / bytes per token.
When both a fraction and a token budget are set, TensorRT-LLM uses the smaller pool.

Precision: fp16/bf16 set the model dtype. fp8 needs a checkpoint already quantized to FP8
(ModelOpt `hf_quant_config.json` with quant_algo FP8..., or a config.json quantization_config
with quant_method fp8 / modelopt): TensorRT-LLM runs a checkpoint's weights as they are stored,
so fp8 is refused on an unquantized checkpoint and bf16/fp16 on an FP8 one (a run labelled bf16
must not measure FP8 weights). FP8 weights need compute capability 8.9; an FP8 KV cache is
allowed from 8.0 (Ampere). fp32 is refused on the PyTorch backend, whose custom kernels do not
take float32 (NVIDIA/TensorRT-LLM#5260).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import yaml
from pydantic import AliasChoices, Field

from servesweep import controlplane
from servesweep.backends.base import ServerConfig
from servesweep.backends.memory_settings import MeasuredMemory, MemoryBudget, MemorySettings, fraction_for_budget
from servesweep.backends.checkpoint import Checkpoint, inspect_checkpoint
from servesweep.backends.launch import Capability, LaunchedProcess, probe_devices, server_port, start_server
from servesweep.backends.process import ServerProcess, classify_log
from servesweep.backends.telemetry import TelemetrySampler
from servesweep.backends.trtllm_metrics import PREEMPTION_SEMANTICS, TrtllmMetricsReader, probe_prometheus
from servesweep.backends.trtllm_release import CliFeatures, Version, detect_version
from servesweep.errors import ConfigError, ServerStartError, UnsupportedConfig
from servesweep.memory_fraction import FractionOf
from servesweep.precision import PRECISIONS, fp8_refusal, has_fp8_tensor_cores, kv_bytes_per_element

SchedulerPolicy = Literal["GUARANTEED_NO_EVICT", "MAX_UTILIZATION", "STATIC_BATCH"]
DEFAULT_SCHEDULER_POLICY = "GUARANTEED_NO_EVICT"  # what trtllm-serve sets when the options file names none

MODELOPT_FP8_COMMAND = (
    "git clone https://github.com/NVIDIA/Model-Optimizer && cd Model-Optimizer/examples/llm_ptq && "
    "scripts/huggingface_example.sh --model {model} --quant fp8 --export_fmt hf")

# Log line -> cause, first match wins (servesweep.backends.process.classify_log).
LOG_CAUSES: list[tuple[str, str]] = [
    (r"CUDA out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|"
     r"[Oo]ut of memory", "out of memory"),
    (r"illegal memory access|CUDA runtime error|CUDA error|Executor worker returned error", "engine failed (CUDA error)"),
    (r"[Aa]ttention window .*(too large|exceeds)|KV cache .*(too small|insufficient)|"
     r"[Ii]nsufficient (GPU )?memory for (the )?KV cache|not enough .*blocks", "KV cache too small for max_seq_len"),
    (r"[Aa]ddress already in use|Errno 98|Failed to bind socket", "port already in use"),
    (r"No such option|Invalid value for|Extra inputs are not permitted|validation errors? for "
     r"(TorchLlmArgs|TrtLlmArgs|LlmArgs|KvCacheConfig|SchedulerConfig|QuantConfig)",
     "trtllm-serve rejected an option (release older or newer than servesweep assumed?)"),
    (r"(quantiz|quant_algo|[Ff][Pp]8|FP4|dtype|[Bb]float16).*(not supported|unsupported|is only supported|requires)|"
     r"(not supported|[Uu]nsupported).*(quantiz|quant_algo|[Ff][Pp]8|FP4|dtype|SM ?\d+|architecture)",
     "unsupported dtype or quantization on this device"),
    (r"\[TRT\] \[E\]|[Ee]ngine build(ing)? failed|[Ff]ailed to build (the )?(TensorRT )?engine|"
     r"Builder failed|buildSerializedNetwork", "TensorRT engine build failed"),
    (r"No GPU devices found|no CUDA-capable device|CUDA driver version is insufficient", "no usable GPU"),
    (r"HFValidationError|Repo id must|is not a local folder|does not appear to have a file named|"
     r"No such file or directory|Can't load (the )?(config|tokenizer)|Unrecognized model|"
     r"[Ff]ailed to (load|find) (the )?(model|checkpoint|engine)", "bad model path"),
    (r"No module named|ModuleNotFoundError", "server package not installed"),
]


def classify_trtllm_log(log_tail: str) -> str:
    return classify_log(log_tail, LOG_CAUSES)


# ---------------------------------------------------------------------------------------------
# Configuration, argv and options file

def _alias(*names: str, default: Any = None) -> Any:
    return Field(default=default, validation_alias=AliasChoices(*names))


class TrtllmConfig(ServerConfig):
    kind: Literal["trtllm"] = "trtllm"
    backend: Literal["pytorch", "tensorrt"] = "pytorch"
    executable: str = "trtllm-serve"
    max_batch_size: int | None = _alias("max_batch_size")
    memory_fraction: float | None = _alias("memory_fraction", "kv_cache_free_gpu_memory_fraction",
                                           "free_gpu_memory_fraction")
    max_num_tokens: int | None = _alias("max_num_tokens")
    max_model_len: int | None = _alias("max_model_len", "max_seq_len")
    tensor_parallel_size: int = _alias("tensor_parallel_size", "tp_size", default=1)
    # None: trtllm-serve's default, GUARANTEED_NO_EVICT (never pauses a running request).
    capacity_scheduler_policy: SchedulerPolicy | None = None
    # The release, when known (skips detection), e.g. "1.0.0".
    version: str | None = None
    version_timeout_s: float = 60.0
    # More options-file keys; one that servesweep sets itself to another value is refused.
    extra_llm_api_options: dict[str, Any] = {}

    knob_names: ClassVar[dict[str, str]] = {
        "max_batch_size": "max_batch_size", "memory_fraction": "kv_cache_free_gpu_memory_fraction",
        "kv_cache_memory_bytes": "kv_cache_config.max_tokens", "max_num_tokens": "max_num_tokens",
    }

    label_prefix: ClassVar[str] = "trtllm"
    # max_batch_size, kv_cache_free_gpu_memory_fraction (not vLLM's seqs / gmu).
    label_words: ClassVar[dict[str, str]] = {"max_batch_size": "batch", "memory_fraction": "freemem"}
    # kv_cache_config.free_gpu_memory_fraction: of the memory free after the model loaded.
    memory_fraction_of: ClassVar[FractionOf] = "free"

    def label(self) -> str:
        return super().label() + ("-trtengine" if self.backend == "tensorrt" else "")

    @property
    def scheduler_policy(self) -> str:
        return self.capacity_scheduler_policy or DEFAULT_SCHEDULER_POLICY


def check_supported(config: TrtllmConfig, capability: tuple[int, int] | None, checkpoint: Checkpoint) -> None:
    """Refuse what TensorRT-LLM cannot run as labelled, before anything is launched."""
    model = config.model
    if config.precision == "fp32" and config.backend == "pytorch":
        raise UnsupportedConfig(
            "fp32 is not supported by TensorRT-LLM's PyTorch backend (its custom kernels take fp16/bf16 only, "
            "NVIDIA/TensorRT-LLM#5260); use bf16, or backend: tensorrt")
    if PRECISIONS[config.precision].quantized_fp8:
        if not checkpoint.local:
            raise UnsupportedConfig(
                f"precision fp8 on TensorRT-LLM needs a checkpoint already quantized to FP8, and {model!r} is not a "
                f"local directory whose quantization servesweep can check; download it and give its directory")
        if not checkpoint.fp8_weights:
            found = f"it is quantized as {checkpoint.quant_algo}" if checkpoint.quant_algo else \
                "it has no FP8 quantization config (hf_quant_config.json, or quantization_config in config.json)"
            raise UnsupportedConfig(
                f"precision fp8 on TensorRT-LLM needs a checkpoint already quantized to FP8 (TensorRT-LLM runs the "
                f"stored weights), but {found}: quantize it with NVIDIA Model Optimizer "
                f"({MODELOPT_FP8_COMMAND.format(model=model)}) and serve the exported directory")
        if capability is not None and not has_fp8_tensor_cores(capability):
            raise UnsupportedConfig(fp8_refusal(capability))
    elif checkpoint.quant_algo:
        raise UnsupportedConfig(
            f"{model} is a checkpoint quantized as {checkpoint.quant_algo} ({checkpoint.quant_source}); TensorRT-LLM "
            f"runs it quantized whatever dtype is asked, so it cannot be measured as {config.precision}"
            + ("; use precision: fp8" if checkpoint.fp8_weights else ""))
    if capability is not None and tuple(capability) < (8, 0):
        if config.kv_cache_dtype == "fp8" or checkpoint.fp8_kv:
            raise UnsupportedConfig(f"an FP8 KV cache needs compute capability >= 8.0 (Ampere); this GPU has "
                                    f"{capability[0]}.{capability[1]}")
        if config.precision == "bf16":
            raise UnsupportedConfig(f"bf16 needs compute capability >= 8.0 (Ampere); this GPU has "
                                    f"{capability[0]}.{capability[1]}: use fp16")


def kv_fp8(config: TrtllmConfig, checkpoint: Checkpoint) -> bool:
    """Whether the KV cache is FP8: asked for, or (dtype auto) what the checkpoint prescribes."""
    return config.kv_cache_dtype == "fp8" or (config.kv_cache_dtype == "auto" and checkpoint.fp8_kv)


def kv_bytes_per_token(config: TrtllmConfig, checkpoint: Checkpoint) -> int | None:
    """KV bytes one token takes over the whole model (all TP ranks together)."""
    if checkpoint.shape is None:
        return None
    element = kv_bytes_per_element(config.precision, "fp8" if kv_fp8(config, checkpoint) else "auto")
    return checkpoint.shape.kv_bytes_per_token(element)


def _tokens(kv_bytes: int, tensor_parallel_size: int, per_token: float) -> int:
    # The budget is per GPU, the bytes per token over the whole model (all TP ranks).
    return int(kv_bytes * tensor_parallel_size // per_token)


def kv_budget_tokens(config: TrtllmConfig, per_token: int | None) -> int | None:
    """`kv_cache_memory_bytes` (per GPU) as TensorRT-LLM's `kv_cache_config.max_tokens`."""
    if config.kv_cache_memory_bytes is None:
        return None
    if not per_token:
        raise ConfigError(
            f"kv_cache_memory_bytes needs the model's KV bytes per token to become TensorRT-LLM's "
            f"kv_cache_config.max_tokens, and {config.model} has no readable config.json; "
            f"give memory_fraction instead, or extra_llm_api_options: {{kv_cache_config: {{max_tokens: N}}}}")
    tokens = _tokens(config.kv_cache_memory_bytes, config.tensor_parallel_size, per_token)
    if tokens < 1:
        raise ConfigError(f"kv_cache_memory_bytes={config.kv_cache_memory_bytes} holds less than one token "
                          f"({per_token} bytes per token)")
    return tokens


def _merge(base: dict[str, Any], extra: dict[str, Any], path: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        where = f"{path}{key}"
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, where + ".")
        elif key in out and out[key] != value:
            raise ConfigError(f"extra_llm_api_options.{where}={value!r} conflicts with {out[key]!r}, which "
                              f"servesweep sets itself from the server configuration; set it there instead")
        else:
            out[key] = value
    return out


def build_options(config: TrtllmConfig, features: CliFeatures, kv_tokens: int | None = None) -> dict[str, Any]:
    """The options file's content (trtllm-serve's `--config` / `--extra_llm_api_options`)."""
    options: dict[str, Any] = {}
    if config.backend == "pytorch":
        options["enable_iter_perf_stats"] = True  # the engine path always collects them
    if features.perf_metrics:
        options["return_perf_metrics"] = True
    options["dtype"] = PRECISIONS[config.precision].dtype
    kv: dict[str, Any] = {}
    if config.memory_fraction is not None:
        kv["free_gpu_memory_fraction"] = config.memory_fraction
    if kv_tokens is not None:
        kv["max_tokens"] = kv_tokens
    if config.kv_cache_dtype == "fp8":
        if config.backend == "tensorrt":  # the engine bakes the KV dtype in at build time
            options["quant_config"] = {"kv_cache_quant_algo": "FP8"}
        elif features.kv_dtype_in_kv_cache_config:
            kv["dtype"] = "fp8"
        else:
            options["kv_cache_dtype"] = "fp8"
    if kv:
        options["kv_cache_config"] = kv
    if config.capacity_scheduler_policy is not None:
        # Replaces trtllm-serve's scheduler settings: its dynamic batch tuning is not kept.
        options["scheduler_config"] = {"capacity_scheduler_policy": config.capacity_scheduler_policy}
    return _merge(options, config.extra_llm_api_options)


def build_argv(config: TrtllmConfig, port: int, options_path: Path, features: CliFeatures) -> list[str]:
    argv = [config.executable, config.model]
    if features.backend_choice:
        argv += ["--backend", config.backend]
    elif config.backend == "pytorch":
        argv += ["--backend", "pytorch"]  # before 1.0 the engine path was the default, with no flag
    argv += ["--host", config.host, "--port", str(port)]
    for flag, value in (
        ("--max_batch_size", config.max_batch_size),
        ("--max_num_tokens", config.max_num_tokens),
        ("--max_seq_len", config.max_model_len),
        ("--kv_cache_free_gpu_memory_fraction", config.memory_fraction),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if config.tensor_parallel_size != 1:
        argv += ["--tp_size", str(config.tensor_parallel_size)]
    argv += [features.config_flag, str(options_path)]
    return argv + list(config.extra_args)


# ---------------------------------------------------------------------------------------------
# KV pool from the server log

_TOKENS_PER_BLOCK = re.compile(r"Number of tokens per block: (\d+)")
_MAX_TOKENS = re.compile(r"Allocated ([0-9.]+) GiB for max tokens in paged KV cache \((\d+)\)")
_PRIMARY_BLOCKS = re.compile(r"Number of blocks in KV cache primary pool: (\d+)")


def kv_pool_from_log(log: str, bytes_per_token: int | None, cache_dtype: str) -> dict[str, Any]:
    """The KV pool TensorRT-LLM allocated, from its start-up log (the last report wins)."""
    tokens_m = _MAX_TOKENS.findall(log)
    if not tokens_m:
        return {"tokens": None, "bytes": None, "source": None, "cache_dtype": cache_dtype}
    gib, tokens_s = tokens_m[-1]
    tokens = int(tokens_s)
    per_block = int(m[-1]) if (m := _TOKENS_PER_BLOCK.findall(log)) else None
    blocks = int(m[-1]) if (m := _PRIMARY_BLOCKS.findall(log)) else (tokens // per_block if per_block else None)
    if bytes_per_token:
        size, source = tokens * bytes_per_token, "server log (max tokens) x model KV bytes per token"
    else:
        size, source = int(float(gib) * 2**30), "server log (GiB, rounded to 0.01, one GPU)"
    return {"tokens": tokens, "bytes": size, "source": source, "num_blocks": blocks, "block_size": per_block,
            "cache_dtype": cache_dtype, "log_reported_gib_per_gpu": float(gib)}


# ---------------------------------------------------------------------------------------------
# The launched server

class _HealthWatch:
    """Polls /health in a thread, so the run's event loop never waits on it. TensorRT-LLM
    answers 503 once its engine has failed; that is the only answer taken as a failure (a slow
    or refused answer is left to the process check)."""

    def __init__(self, url: str, interval_s: float = 2.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="servesweep-trtllm-health", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with controlplane.urlopen(self.url, timeout=self.interval_s):
                    pass
            except urllib.error.HTTPError as exc:
                if exc.code == 503:
                    body = exc.read(200).decode(errors="replace").strip()
                    self.failure = f"/health answered HTTP 503 during the run ({body or 'engine unavailable'})"
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass

    def stop(self) -> None:
        self._stop.set()


@dataclass
class LaunchedTrtllm(LaunchedProcess):
    backend: ClassVar[str] = "trtllm"

    options_path: Path
    options: dict[str, Any]
    features: CliFeatures
    version_source: str
    kv_bytes_per_token: int | None
    checkpoint: Checkpoint
    prometheus: bool  # /prometheus/metrics is mounted
    knobs: dict[str, str] = field(default_factory=lambda: dict(TrtllmConfig.knob_names))
    health_interval_s: float = 2.0
    _health: _HealthWatch | None = None

    @property
    def tokenizer_dir(self) -> str | None:
        """The model directory when it holds a tokenizer (trtllm-serve serves no /tokenize)."""
        root = Path(self.config.model).expanduser()
        return str(root) if (root / "tokenizer.json").exists() or (root / "tokenizer_config.json").exists() else None

    def _pool_from_iterations(self, max_blocks: int, tokens_per_block: int) -> None:
        if self.kv_pool.get("tokens") is None:
            tokens = max_blocks * tokens_per_block
            self.kv_pool.update({
                "tokens": tokens, "num_blocks": max_blocks, "block_size": tokens_per_block,
                "bytes": tokens * self.kv_bytes_per_token if self.kv_bytes_per_token else None,
                "source": "iteration stats (maxNumBlocks x tokensPerBlock) x model KV bytes per token"})

    def telemetry(self, out_path: Path, interval_s: float = 0.25) -> TelemetrySampler:
        """A sampler of this server. One at a time: the JSON /metrics empties on every read, so a
        second sampler raises ConfigError until the first is stopped."""
        reader = TrtllmMetricsReader(self.base_url, self.prometheus, on_pool=self._pool_from_iterations)
        return TelemetrySampler(reader, out_path, interval_s, self.kv_pool, self.gpu_indices)

    def poll_failure(self) -> str | None:
        reason = self.process.poll_failure()
        if reason:
            return reason
        if self._health is None:
            self._health = _HealthWatch(self.base_url + "/health", self.health_interval_s)
        if self._health.failure:
            cause = classify_trtllm_log(self.process.log_tail(60))
            return f"{self._health.failure}; log cause: {cause}; log: {self.process.log_path}"
        return None

    def info(self) -> dict[str, Any]:
        policy = self.config.scheduler_policy
        return {
            **self.common_info(),
            "options_file": str(self.options_path),
            "options": self.options,
            "version_source": self.version_source,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "checkpoint": self.checkpoint.to_dict(),
            "knobs": self.knobs,
            "scheduler_policy": policy,
            "preemption_semantics": PREEMPTION_SEMANTICS.get(policy),
            "prometheus_metrics": self.prometheus,
        }

    def stop(self) -> None:
        if self._health is not None:
            self._health.stop()
        self.process.stop()


def _log_text(path: Path, max_bytes: int = 4 << 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - max_bytes, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def launch_trtllm(
    config: TrtllmConfig,
    results_dir: Path,
    capability: Capability | Callable[[], Capability] = None,
    on_wait: Callable[[float], None] | None = None,
) -> LaunchedTrtllm:
    """Start trtllm-serve and wait until it is healthy (the skeleton of backends/launch.py). Raises
    ServerStartError, UnsupportedConfig or ConfigError."""
    devices = probe_devices(capability)
    checkpoint = inspect_checkpoint(config.model)
    if not checkpoint.local and config.model.startswith((".", "/", "~")):
        raise ServerStartError("bad model path", f"model directory {config.model} does not exist")
    check_supported(config, devices.capability, checkpoint)
    if config.served_model_name:
        raise UnsupportedConfig("served_model_name is not passed to trtllm-serve (its --served_model_name flag exists "
                                "only in recent releases): the server names the model after its directory")
    if config.version:
        version = Version.parse(config.version)
        if version is None:
            raise ConfigError(f"version {config.version!r} is not a TensorRT-LLM release number like 1.0.0")
        version_source = "configured"
    else:
        version, version_source = detect_version(config.executable, config.version_timeout_s)
    features = CliFeatures.for_version(version)
    per_token = kv_bytes_per_token(config, checkpoint)
    options = build_options(config, features, kv_budget_tokens(config, per_token))
    port = server_port(config)
    results_dir.mkdir(parents=True, exist_ok=True)
    options_path = results_dir / f"trtllm-options-{config.label()}.yaml"
    options_path.write_text(yaml.safe_dump(options, sort_keys=False))
    argv = build_argv(config, port, options_path, features)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    process = ServerProcess(argv, results_dir / f"server-{config.label()}.log", config.host, port, env=env,
                            classify=classify_trtllm_log)

    def pool_and_metrics(process: ServerProcess) -> tuple[dict[str, Any], bool]:
        cache_dtype = "fp8" if kv_fp8(config, checkpoint) else PRECISIONS[config.precision].dtype
        kv_pool = kv_pool_from_log(_log_text(process.log_path), per_token, cache_dtype)
        return kv_pool, features.perf_metrics and probe_prometheus(process.base_url) is not None

    served, (kv_pool, prometheus) = start_server(process, config.startup_timeout_s, on_wait, pool_and_metrics)
    return LaunchedTrtllm(config=config, process=process, argv=argv, model_name=served.model_name,
                          version=served.version or (str(version) if version else None), startup_s=served.startup_s,
                          kv_pool=kv_pool, gpu_indices=devices.indices, gpu_names=devices.names(),
                          options_path=options_path, options=options, features=features,
                          version_source=version_source, kv_bytes_per_token=per_token, checkpoint=checkpoint,
                          prometheus=prometheus)


def memory_settings(budget: MemoryBudget, measured: MeasuredMemory) -> MemorySettings:
    """TensorRT-LLM sizes its pool in tokens (kv_cache_config.max_tokens = budget x TP / KV bytes
    per token, as the launch converts kv_cache_memory_bytes); the equivalent
    kv_cache_config.free_gpu_memory_fraction is budget / (device total - non-KV): a fraction of the
    memory free after the model loaded, not of the device (servesweep.memory_fraction, "free")."""
    fraction, fits, non_kv, source, notes = fraction_for_budget(
        "free", budget.kv_bytes, measured, "kv_cache_free_gpu_memory_fraction",
        "TensorRT-LLM accounting (total - KV pool / free fraction)")
    per_token = measured.bytes_per_token
    tokens = _tokens(budget.kv_bytes, measured.tensor_parallel_size, per_token) if per_token else None
    if tokens is None:
        notes.append("KV bytes per token unknown: no kv_cache_config.max_tokens")
    names = TrtllmConfig.knob_names
    args = ["--max_batch_size", str(budget.max_batch_size)]
    update: dict[str, Any] = {"kv_cache_memory_bytes": budget.kv_bytes, "max_batch_size": budget.max_batch_size}
    if fraction is not None and fits:
        args += ["--kv_cache_free_gpu_memory_fraction", str(fraction)]
        # TensorRT-LLM takes the smaller of the max_tokens pool and the fraction's: the run's
        # fraction (or the 0.9 default) could cap a larger budget, so the relaunch sets the
        # budget's own fraction (rounded up, so max_tokens is what binds).
        update["memory_fraction"] = fraction
    return MemorySettings(
        knobs={names["max_batch_size"]: budget.max_batch_size, names["kv_cache_memory_bytes"]: tokens,
               names["memory_fraction"]: fraction},
        server_args=args, config_update=update, memory_fraction=fraction, memory_fraction_of="free", fits_device=fits,
        non_kv_bytes=non_kv, non_kv_source=source, notes=notes)


class TrtllmBackend:
    kind = "trtllm"
    display_name = "TensorRT-LLM"
    config_class = TrtllmConfig

    def memory_settings(self, budget: MemoryBudget, measured: MeasuredMemory) -> MemorySettings:
        return memory_settings(budget, measured)

    def launch(self, config: ServerConfig, out_dir: Path,
               on_wait: Callable[[float], None] | None = None) -> LaunchedTrtllm:
        assert isinstance(config, TrtllmConfig)
        return launch_trtllm(config, out_dir, on_wait=on_wait)
