"""GPU facts through NVML (nvidia-ml-py): memory, utilization, power, compute capability.

On a machine without an NVIDIA GPU every call answers "not available" instead of failing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but keep the CPU path alive without it
    pynvml = None  # type: ignore[assignment]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int
    compute_capability: tuple[int, int]


class Nvml:
    """A handle on NVML; `available` is False (with `reason`) where there is no GPU."""

    def __init__(self) -> None:
        self.available = False
        self.reason: str | None = None
        if pynvml is None:
            self.reason = "nvidia-ml-py not installed"
            return
        try:
            pynvml.nvmlInit()
            self.available = True
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"NVML not available: {exc}"

    def visible_indices(self) -> list[int]:
        if not self.available:
            return []
        count = pynvml.nvmlDeviceGetCount()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            wanted = [int(x) for x in visible.split(",") if x.strip().isdigit()]
            return [i for i in wanted if i < count]
        return list(range(count))

    def info(self, index: int) -> GpuInfo:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        return GpuInfo(index, name, int(mem.total), (int(major), int(minor)))

    def sample(self, indices: list[int]) -> list[dict]:
        out = []
        for i in indices:
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            try:
                power_w = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception:
                power_w = None
            out.append({"index": i, "mem_used": int(mem.used), "mem_total": int(mem.total),
                        "util_pct": int(util.gpu), "power_w": power_w})
        return out


def device_capability() -> tuple[int, int] | None:
    """Compute capability of the first visible GPU, or None without one."""
    nvml = Nvml()
    indices = nvml.visible_indices()
    return nvml.info(indices[0]).compute_capability if indices else None
