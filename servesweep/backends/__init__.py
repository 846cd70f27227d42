"""Server backends, one module each, found through `BACKENDS` by their `kind`.

A new backend is one module (a config class with `kind`, a launcher, a metrics reader) and
one line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from servesweep.backends.base import DEFAULT_KIND, LaunchedServer, ServerBackend, ServerConfig, Telemetry
from servesweep.backends.memory_settings import MeasuredMemory, MemoryBudget, MemorySettings
from servesweep.backends.trtllm import TrtllmBackend, TrtllmConfig
from servesweep.backends.vllm import VllmBackend, VllmConfig
from servesweep.errors import ConfigError

BACKENDS: dict[str, ServerBackend] = {
    backend.kind: backend for backend in (VllmBackend(), TrtllmBackend())
}

__all__ = [
    "BACKENDS",
    "DEFAULT_KIND",
    "LaunchedServer",
    "MeasuredMemory",
    "MemoryBudget",
    "MemorySettings",
    "ServerBackend",
    "ServerConfig",
    "Telemetry",
    "backend_for",
    "config_from_dict",
    "launch",
    "TrtllmConfig",
    "VllmConfig",
]


def backend_for(kind: str) -> ServerBackend:
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ConfigError(f"unknown server kind {kind!r}; registered: {', '.join(BACKENDS)}") from None


def config_from_dict(values: dict[str, Any]) -> ServerConfig:
    """A typed server configuration from plain values; `kind` picks the class (default DEFAULT_KIND)."""
    kind = values.get("kind", DEFAULT_KIND)
    return backend_for(kind).config_class.model_validate({**values, "kind": kind})


def launch(config: ServerConfig, out_dir: Path, on_wait: Callable[[float], None] | None = None) -> LaunchedServer:
    """Start the server a configuration describes; raises ServerStartError or UnsupportedConfig."""
    return backend_for(config.kind).launch(config, out_dir, on_wait)
