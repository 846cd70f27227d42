"""What every server backend offers: a typed configuration chosen by `kind`, a launcher, and
the launched server's handle. The sweep, the commands, the gate and the scenario schema work
through these and never import a particular backend.

Common configuration fields are named once here; a backend maps them to its own flags
(`max_batch_size` is vLLM's `--max-num-seqs` and TensorRT-LLM's `--max_batch_size`;
`memory_fraction` is vLLM's `--gpu-memory-utilization` and TensorRT-LLM's
`--kv_cache_free_gpu_memory_fraction`). The servers read that fraction differently (of the whole
device, of the memory free after loading: servesweep.memory_fraction), so a backend also turns a KV budget
into its own knobs (`ServerBackend.memory_settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, model_validator

from servesweep.backends.memory_settings import MeasuredMemory, MemoryBudget, MemorySettings
from servesweep.memory_fraction import FractionOf
from servesweep.precision import KvCacheDtype, PrecisionName

# The kind a server configuration (or a point recorded before kinds were) has when it names none.
DEFAULT_KIND = "vllm"


def dummy_weights_from_load_format(data: Any) -> Any:
    """Plain values with vLLM's `load_format` (scenario files, stored points and options written
    before dummy_weights was backend-neutral) as `dummy_weights`: dummy -> True, auto -> False."""
    if isinstance(data, dict) and "load_format" in data:
        data = dict(data)
        fmt = data.pop("load_format")
        if fmt not in (None, "auto", "dummy"):
            raise ValueError(f"load_format: {fmt!r} is not auto or dummy")
        if fmt is not None and data.get("dummy_weights") is None:
            data["dummy_weights"] = fmt == "dummy"
    return data


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    kind: str
    model: str
    served_model_name: str | None = None
    precision: PrecisionName = "bf16"
    kv_cache_dtype: KvCacheDtype = "auto"
    max_batch_size: int | None = None
    memory_fraction: float | None = None
    # An exact KV-cache budget; the recommendation sizes it (see servesweep.sweep.sizing).
    kv_cache_memory_bytes: int | None = None
    max_num_tokens: int | None = None  # tokens per scheduler step
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    host: str = "127.0.0.1"
    port: int | None = None
    startup_timeout_s: float = 900.0
    extra_args: list[str] = []
    # Random weights in the model's shape instead of the checkpoint's (the generated tiny model has
    # none on disk); None: the server's default, the checkpoint's. vLLM: --load-format dummy.
    dummy_weights: bool | None = None

    # The names this backend's flags give the common knobs, for advice and recommendations.
    knob_names: ClassVar[dict[str, str]] = {}
    # Whether the server can run on dummy weights; a config asking for them where it cannot is refused.
    dummy_weights_supported: ClassVar[bool] = False
    # What `memory_fraction` is a fraction of (servesweep.memory_fraction).
    memory_fraction_of: ClassVar[FractionOf] = "device"
    # Leads the label, so two engines at one precision get two results directories.
    label_prefix: ClassVar[str] = ""
    # The label's short words for the common knobs, in the server's own terms (vLLM: seqs, gmu).
    label_words: ClassVar[dict[str, str]] = {"max_batch_size": "batch", "memory_fraction": "mem"}

    @model_validator(mode="before")
    @classmethod
    def _load_format(cls, data: Any) -> Any:
        return dummy_weights_from_load_format(data)

    @model_validator(mode="after")
    def _dummy_weights_supported(self) -> "ServerConfig":
        if self.dummy_weights and not self.dummy_weights_supported:
            raise ValueError(f"dummy_weights: the {self.kind} backend cannot run on dummy weights")
        return self

    def label(self) -> str:
        """A short, stable name for results directories and sweep points."""
        parts = ([self.label_prefix] if self.label_prefix else []) + [self.precision]
        if self.kv_cache_dtype != "auto":
            parts.append(f"kv{self.kv_cache_dtype}")
        if self.max_batch_size:
            parts.append(f"{self.label_words['max_batch_size']}{self.max_batch_size}")
        if self.memory_fraction:
            parts.append(f"{self.label_words['memory_fraction']}{self.memory_fraction:g}")
        if self.max_num_tokens:
            # Only when set, so the labels of results directories written before stay the same.
            parts.append(f"tok{self.max_num_tokens}")
        if self.kv_cache_memory_bytes:
            parts.append(f"kv{self.kv_cache_memory_bytes / 2**20:.0f}MiB")
        return "-".join(parts)


@runtime_checkable
class Telemetry(Protocol):
    """Samples a server while it is loaded (servesweep.backends.telemetry.TelemetrySampler)."""

    def start(self, t0: float) -> None: ...
    def stop(self) -> None: ...
    def sample_now(self) -> None: ...
    def window_stats(self, start_s: float, end_s: float) -> dict[str, Any]: ...


class LaunchedServer(Protocol):
    """A server a backend started and found healthy; `with launch(...) as server:` stops it on
    leaving the block, an exception or Ctrl-C included."""

    config: ServerConfig
    model_name: str
    version: str | None
    startup_s: float
    kv_pool: dict[str, Any]

    @property
    def base_url(self) -> str: ...
    @property
    def tokenizer_dir(self) -> str | None:
        """A local tokenizer for exact-length prompts when the server has no /tokenize, else None."""
        ...
    def __enter__(self) -> "LaunchedServer": ...
    def __exit__(self, *exc: object) -> None: ...
    def telemetry(self, out_path: Path, interval_s: float = 0.25) -> Telemetry: ...
    def info(self) -> dict[str, Any]: ...
    def poll_failure(self) -> str | None: ...
    def stop(self) -> None: ...


class ServerBackend(Protocol):
    """One kind of server: its configuration class and how to launch it."""

    kind: str
    display_name: str
    config_class: type[ServerConfig]

    def launch(self, config: ServerConfig, out_dir: Path,
               on_wait: Callable[[float], None] | None = None) -> LaunchedServer: ...

    def memory_settings(self, budget: MemoryBudget, measured: MeasuredMemory) -> MemorySettings:
        """The KV budget and batch cap as this server's own knobs, by its own memory rule."""
        ...
