"""Which TensorRT-LLM release a `trtllm-serve` is, and which spellings that release accepts.

The version comes from the tensorrt_llm package metadata of the Python the executable's `#!`
line names (the trtllm-serve console script of a pip install), else from `EXECUTABLE --version`
(wrapper scripts), else it is unknown and the spellings every release since 1.0 accepts are used.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from servesweep.errors import ServerStartError, UnsupportedConfig


_STAGES = {"dev": 0, "a": 1, "b": 2, "rc": 3, "": 4, "post": 5}
_VERSION_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)\.(\d+)(?:\.?(rc|a|b|dev|post)(\d+))?")


@dataclass(frozen=True, order=True)
class Version:
    """A TensorRT-LLM release number; release candidates sort before their release."""

    key: tuple[int, int, int, int, int]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> "Version | None":
        m = _VERSION_RE.search(text)
        if not m:
            return None
        major, minor, patch, stage, num = m.groups()
        return cls((int(major), int(minor), int(patch), _STAGES[stage or ""], int(num or 0)), m.group(0))

    def __str__(self) -> str:
        return self.text


def _v(text: str) -> Version:
    parsed = Version.parse(text)
    assert parsed is not None
    return parsed


# The oldest release whose options file takes the PyTorch backend's knobs at the top level:
# NVIDIA/TensorRT-LLM#4603 (merged late May 2025) flattened `pytorch_backend_config` into the LLM
# arguments; it first shipped in the 0.21 release candidates. Older releases are refused.
MIN_VERSION = _v("0.21.0rc0")
# 1.0 made the PyTorch backend the default and `--backend tensorrt` a choice (earlier releases
# took only `--backend pytorch`, the engine path being the default); the 1.0 documentation
# (features/quantization) sets the KV-cache dtype as `KvCacheConfig(dtype=...)`, replacing the
# top-level `kv_cache_dtype` (NVIDIA/TensorRT-LLM#5752, reverted in #6208 on 2025-07-21 and
# landed again during the 1.0 release candidates: a 1.0.0rc may take either spelling; servesweep
# gives 1.0.0rcN the old one). `return_perf_metrics` (/prometheus/metrics) is likewise taken
# from 1.0 on; older releases get no Prometheus endpoint.
V1 = _v("1.0.0")
# `--config` became an alias of `--extra_llm_api_options` in NVIDIA/TensorRT-LLM#9104 (opened
# 2025-11-12, during the 1.2.0 release candidates). The exact first release could not be
# established from the sources at hand, so the documented cutoff is 1.2.0 (final): earlier
# releases, and an unknown version, get `--extra_llm_api_options`, which every release since
# 0.19 accepts and the current source still keeps as an alias.
CONFIG_FLAG_SINCE = _v("1.2.0")


@dataclass(frozen=True)
class CliFeatures:
    """What the trtllm-serve in use accepts, chosen from its version."""

    version: Version | None
    config_flag: str  # --config or --extra_llm_api_options
    kv_dtype_in_kv_cache_config: bool  # kv_cache_config.dtype, else top-level kv_cache_dtype
    perf_metrics: bool  # return_perf_metrics (mounts /prometheus/metrics)
    backend_choice: bool  # --backend pytorch|tensorrt (else only --backend pytorch exists)

    @classmethod
    def for_version(cls, version: Version | None) -> "CliFeatures":
        if version is None:
            return cls(None, "--extra_llm_api_options", True, True, True)
        if version < MIN_VERSION:
            raise UnsupportedConfig(
                f"TensorRT-LLM {version} is older than {MIN_VERSION}, the oldest release whose trtllm-serve "
                f"options file servesweep can write (the PyTorch backend's knobs were moved to the top level "
                f"then); upgrade TensorRT-LLM or load-test the running server with --url")
        new = version >= V1
        return cls(version, "--config" if version >= CONFIG_FLAG_SINCE else "--extra_llm_api_options",
                   new, new, new)


def _version_in_output(output: str) -> Version | None:
    for line in output.splitlines():
        if "version" in line.lower() and (v := Version.parse(line)):
            return v
    stripped = output.strip()
    return Version.parse(stripped) if re.fullmatch(r"[\w.+-]+", stripped or "-") else None


def _shebang_interpreter(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if not parts:
        return None
    if Path(parts[0]).name == "env" and len(parts) > 1:  # #!/usr/bin/env python3
        return shutil.which(parts[1])
    return parts[0]


def _run(argv: list[str], timeout_s: float) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + "\n" + done.stderr if done.returncode == 0 else None


@functools.lru_cache(maxsize=16)
def _detect(path: str, mtime_ns: int, timeout_s: float) -> tuple[Version | None, str]:
    name = Path(path).name
    interpreter = _shebang_interpreter(path)
    if interpreter and "python" in Path(interpreter).name:
        # A pip-installed console script: ask its Python's package metadata. Cheap (tensorrt_llm is
        # not imported, so CUDA is not initialized) and exact, where `trtllm-serve --version` would
        # import all of TensorRT-LLM first and, in the click CLI of the releases read, reject the flag.
        probe = "import importlib.metadata as m; print(m.version('tensorrt_llm'))"
        out = _run([interpreter, "-c", probe], timeout_s)
        if out and (v := Version.parse(out.strip())):
            return v, f"tensorrt_llm package metadata of {interpreter}"
    out = _run([path, "--version"], timeout_s)
    if out and (v := _version_in_output(out)):
        return v, f"`{name} --version`"
    return None, (f"not detected (no tensorrt_llm package metadata, and `{name} --version` printed no version); "
                  f"assumed >= {V1} and used --extra_llm_api_options")


def detect_version(executable: str, timeout_s: float = 60.0) -> tuple[Version | None, str]:
    """(version, how it was found), remembered per executable file. Raises ServerStartError when
    the executable is missing."""
    path = shutil.which(executable)
    if path is None:
        raise ServerStartError("server executable not found",
                               f"{executable!r} is not on PATH; install TensorRT-LLM or set `executable`")
    return _detect(path, os.stat(path).st_mtime_ns, timeout_s)
