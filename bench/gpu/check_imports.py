"""Check, on the GPU machine, that everything servesweep imports is importable; say what is missing.

    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu/check_imports.py [--no-vllm]

Prints one line per package (version or MISSING) and exits 1 when any is missing, so a device
call stops before it spends minutes on a server that cannot be measured. The list is the
runtime dependencies of pyproject.toml (plus uvloop, which the load generator uses when present,
and vLLM itself, staged by shared/gpu/stage-vllm.sh).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib import metadata

# (import name, distribution name as pip knows it)
PACKAGES = [
    ("aiohttp", "aiohttp"), ("httptools", "httptools"), ("numpy", "numpy"), ("pandas", "pandas"),
    ("pydantic", "pydantic"), ("rich", "rich"), ("yaml", "PyYAML"), ("orjson", "orjson"),
    ("tokenizers", "tokenizers"), ("prometheus_client", "prometheus-client"), ("pynvml", "nvidia-ml-py"),
    ("matplotlib", "matplotlib"), ("uvloop", "uvloop"),
]


def version_of(module: object, dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # importable without dist-info (unpacked wheels keep theirs)
        return str(getattr(module, "__version__", "?"))


def main() -> int:
    wanted = list(PACKAGES) + ([] if "--no-vllm" in sys.argv else [("vllm", "vllm")])
    missing = []
    for name, dist in wanted:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # an import that breaks for any reason is as bad as a missing one
            missing.append(dist)
            print(f"  {dist:<18} MISSING ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        print(f"  {dist:<18} {version_of(module, dist)}  {getattr(module, '__file__', '')}")
    if not missing:
        try:
            import servesweep.cli  # noqa: F401  (every command module, so every import they make)
            # The sweep's and the analysis' modules by walking the packages, not by name: a list of
            # names went stale after a rename and failed a GPU call's install (2026-12-07).
            import servesweep.analysis
            import servesweep.sweep
            for package in (servesweep.sweep, servesweep.analysis):
                for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                    importlib.import_module(info.name)
        except Exception as exc:
            print(f"servesweep.cli does not import: {type(exc).__name__}: {exc}")
            return 1
        print("imports: all present; servesweep.cli imports")
        return 0
    extra = ["httptools", "orjson"] + [m for m in missing if m not in ("httptools", "orjson", "vllm")]
    print(f"imports: MISSING {' '.join(missing)}: stage them with vLLM "
          f"(GPU_STAGE_EXTRA=\"{' '.join(extra)}\" bash ../shared/gpu/stage-vllm.sh)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
