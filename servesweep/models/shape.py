"""The shape facts servesweep needs from a model directory's config.json, read in one place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int | None
    vocab_size: int | None
    tied_embeddings: bool

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """2 (K and V) x layers x KV heads x head dim x bytes per element."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def weights_bytes(self, precision: str) -> int | None:
        """Parameter bytes of a Llama-style decoder; FP8 quantizes the linear layers only."""
        if self.intermediate_size is None or self.vocab_size is None:
            return None
        h = self.hidden_size
        attn = h * self.num_heads * self.head_dim * 2 + h * self.num_kv_heads * self.head_dim * 2
        linear = self.num_layers * (attn + 3 * h * self.intermediate_size)
        other = self.vocab_size * h * (1 if self.tied_embeddings else 2) + (2 * self.num_layers + 1) * h
        linear_bytes = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}[precision]
        return int(linear * linear_bytes + other * (4 if precision == "fp32" else 2))


def read_model_shape(model_dir: str | Path) -> ModelShape | None:
    """None when the directory has no readable config.json with the core fields."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    try:
        hidden, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    except KeyError:
        return None
    return ModelShape(
        hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or hidden // heads,
        intermediate_size=cfg.get("intermediate_size"), vocab_size=cfg.get("vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings")),
    )
