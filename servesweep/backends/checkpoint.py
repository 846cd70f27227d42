"""What servesweep can tell about a model directory before launching a server on it: whether
(and how) its weights and KV cache are quantized, and its shape.

Recognized: a Hugging Face checkpoint (ModelOpt's `hf_quant_config.json`, read first as
TensorRT-LLM does, or `quantization_config` in config.json: quant_method fp8 / modelopt / other)
and a TensorRT engine directory (config.json with `pretrained_config.quantization`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesweep.models.shape import ModelShape, read_model_shape


@dataclass(frozen=True)
class Checkpoint:
    """What servesweep can tell about a model before launching it."""

    model: str
    local: bool
    engine: bool = False  # a TensorRT engine directory (config.json with pretrained_config)
    quant_algo: str | None = None  # "FP8", "FP8_BLOCK_SCALES", "NVFP4", ... None: unquantized
    kv_cache_quant_algo: str | None = None
    quant_source: str | None = None  # the file that said so
    shape: ModelShape | None = None

    @property
    def fp8_weights(self) -> bool:
        return bool(self.quant_algo and self.quant_algo.upper().startswith("FP8"))

    @property
    def fp8_kv(self) -> bool:
        return bool(self.kv_cache_quant_algo and self.kv_cache_quant_algo.upper().startswith("FP8"))

    def to_dict(self) -> dict[str, Any]:
        return {"local": self.local, "engine": self.engine, "quant_algo": self.quant_algo,
                "kv_cache_quant_algo": self.kv_cache_quant_algo, "quant_source": self.quant_source}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _engine_shape(pretrained: dict[str, Any]) -> ModelShape | None:
    try:
        hidden, layers, heads = (pretrained["hidden_size"], pretrained["num_hidden_layers"],
                                 pretrained["num_attention_heads"])
    except KeyError:
        return None
    return ModelShape(hidden_size=hidden, num_layers=layers, num_heads=heads,
                      num_kv_heads=pretrained.get("num_key_value_heads") or heads,
                      head_dim=pretrained.get("head_size") or hidden // heads,
                      intermediate_size=pretrained.get("intermediate_size"),
                      vocab_size=pretrained.get("vocab_size"), tied_embeddings=False)


def inspect_checkpoint(model: str) -> Checkpoint:
    """Quantization and shape of a local HF checkpoint or TensorRT engine directory; a model
    name that is not a local directory (a Hugging Face repo id) gives `local=False`."""
    root = Path(model).expanduser()
    if not root.is_dir():
        return Checkpoint(model, local=False)
    config = _read_json(root / "config.json") or {}
    if isinstance(config.get("pretrained_config"), dict):  # engine directory
        pretrained = config["pretrained_config"]
        q = pretrained.get("quantization") or {}
        return Checkpoint(model, True, engine=True, quant_algo=q.get("quant_algo"),
                          kv_cache_quant_algo=q.get("kv_cache_quant_algo"),
                          quant_source="config.json pretrained_config.quantization" if q.get("quant_algo") else None,
                          shape=_engine_shape(pretrained))
    quant_algo = kv_algo = source = None
    modelopt = _read_json(root / "hf_quant_config.json")
    if modelopt is not None:  # TensorRT-LLM reads this file first
        q = modelopt.get("quantization") or {}
        quant_algo, kv_algo, source = q.get("quant_algo"), q.get("kv_cache_quant_algo"), "hf_quant_config.json"
    elif isinstance(qc := config.get("quantization_config"), dict):
        method = str(qc.get("quant_method", "")).lower()
        source = "config.json quantization_config"
        if method == "fp8":
            quant_algo = "FP8_BLOCK_SCALES" if qc.get("weight_block_size") else "FP8"
        elif method == "modelopt":
            quant_algo, kv_algo = qc.get("quant_algo"), qc.get("kv_cache_quant_algo")
        else:  # awq, gptq, compressed-tensors, ...: quantized, in a format not checked here
            quant_algo = method.upper() or "UNKNOWN"
    return Checkpoint(model, True, quant_algo=quant_algo, kv_cache_quant_algo=kv_algo, quant_source=source,
                      shape=read_model_shape(root))
