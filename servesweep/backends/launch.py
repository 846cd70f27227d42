"""The launch skeleton every backend shares; each backend (vllm.py, trtllm.py) fills in its own
checks, command line, environment and what it reads from the started server, in its own order.

  probe_devices   the visible GPUs and the first one's compute capability (or the caller's)
  server_port     the configured port, refused when taken, or a free one
  start_server    start the process, wait until healthy, read the served model's name and the
                  server's version, run the backend's own inspection; the process is stopped
                  when any of it fails
  LaunchedProcess what every launched server has and does: its base URL, the failure poll, the
                  common half of `info()`, the stop (also on leaving `with launch(...) as server:`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

from servesweep.auth import redact_argv
from servesweep import controlplane
from servesweep.backends.base import ServerConfig
from servesweep.backends.gpu import Nvml
from servesweep.backends.process import ServerProcess, free_port, port_in_use
from servesweep.errors import ServerStartError

T = TypeVar("T")
Capability = tuple[int, int] | None


def get_json(url: str) -> Any:
    """One control-plane GET of JSON (no redirect followed: servesweep.controlplane)."""
    with controlplane.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@dataclass(slots=True)
class Devices:
    nvml: Nvml
    indices: list[int]
    capability: Capability

    def names(self) -> list[str]:
        return [self.nvml.info(i).name for i in self.indices]


def probe_devices(capability: Capability | Callable[[], Capability] = None) -> Devices:
    """The visible GPUs, and the compute capability the support checks judge: the caller's (tests
    give one), else the first visible GPU's, else None (no GPU: a CPU build)."""
    nvml = Nvml()
    indices = nvml.visible_indices()
    cap = capability() if callable(capability) else capability
    if cap is None and indices:
        cap = nvml.info(indices[0]).compute_capability
    return Devices(nvml, indices, cap)


def server_port(config: ServerConfig) -> int:
    """The configured port, refused before anything starts when another process holds it; without
    one, a free port."""
    if config.port is not None and port_in_use(config.host, config.port):
        raise ServerStartError("port already in use", f"{config.host}:{config.port} is taken by another process")
    return config.port or free_port(config.host)


@dataclass(slots=True)
class Served:
    """What every started server answers: how long it took to be healthy, its model, its version."""

    startup_s: float
    model_name: str
    version: str | None


def start_server(process: ServerProcess, timeout_s: float, on_wait: Callable[[float], None] | None,
                 inspect: Callable[[ServerProcess], T]) -> tuple[Served, T]:
    """Start `process`, wait until it is healthy, read /v1/models and /version, then the backend's
    own `inspect` (its KV pool, its metrics endpoints). Any failure, Ctrl-C included, stops the
    process before it propagates: no server outlives a launch that did not return it."""
    process.start()
    try:
        startup_s = process.wait_healthy(timeout_s, on_tick=on_wait)
        model_name = get_json(process.base_url + "/v1/models")["data"][0]["id"]
        try:
            version = get_json(process.base_url + "/version").get("version")
        except (OSError, ValueError, AttributeError):  # no /version, or not the JSON expected
            version = None
        extra = inspect(process)
    except BaseException:
        process.stop()
        raise
    return Served(startup_s, model_name, version), extra


@dataclass
class LaunchedProcess:
    """The half of a launched server every backend has (servesweep.backends.base.LaunchedServer)."""

    backend: ClassVar[str]

    config: ServerConfig
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

    @property
    def tokenizer_dir(self) -> str | None:
        return None  # the server's own /tokenize serves (a backend without one overrides this)

    def __enter__(self) -> "LaunchedProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        # BaseException included: a Ctrl-C in the block stops the server before it propagates.
        self.stop()

    def poll_failure(self) -> str | None:
        return self.process.poll_failure()

    def common_info(self) -> dict[str, Any]:
        """The facts every backend records with its points (each adds its own)."""
        return {
            "backend": self.backend,
            "memory_fraction_of": self.config.memory_fraction_of,
            # A key passed to the server (--server-arg --api-key KEY) is not written (servesweep.auth).
            "config": {**self.config.model_dump(), "extra_args": redact_argv(list(self.config.extra_args))},
            "command": redact_argv(list(self.argv)),
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
