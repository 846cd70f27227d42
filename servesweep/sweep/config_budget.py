"""Whether a server configuration can fit the scenario's VRAM budget, judged before starting it.

The estimate is the weights at the configuration's precision plus the KV cache that a full
running batch needs: `max_num_seqs` requests of the workload's longest request (its longest
prompt plus its longest output, at most max_model_len). A configuration over the budget would
either not start or preempt at its own cap, so the config search does not spend a start on it.
Activations, CUDA graphs and the framework's own memory are left out: the estimate errs low, so
a skipped configuration is over the budget for sure and one that passes may still fail to start
(then recorded as a failed start with the server's cause, like any sweep).

The model's shape comes from its Hugging Face `config.json` (a local directory); a model named
only by its hub id has none here, and then nothing is skipped for the budget (said so).
"""

from __future__ import annotations

import json
from pathlib import Path

from servesweep.backends import ServerConfig
from servesweep.precision import PRECISIONS, kv_bytes_per_element

GIB = 2**30


def _shape(model: str) -> dict | None:
    path = Path(model) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("text_config", data)


def estimate_bytes(config: ServerConfig, request_tokens: int) -> tuple[int | None, str]:
    """(bytes the configuration needs at least, how that was reckoned); None when unknown."""
    shape = _shape(config.model)
    if shape is None:
        return None, f"no config.json under {config.model}: memory not estimated"
    try:
        hidden, layers = int(shape["hidden_size"]), int(shape["num_hidden_layers"])
        heads = int(shape["num_attention_heads"])
        kv_heads = int(shape.get("num_key_value_heads") or heads)
        head_dim = int(shape.get("head_dim") or hidden // heads)
        inter, vocab = int(shape["intermediate_size"]), int(shape["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"model config.json lacks {exc}: memory not estimated"
    p = PRECISIONS[config.precision]
    linear = layers * (hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2 + 3 * hidden * inter)
    embeddings = vocab * hidden * (1 if shape.get("tie_word_embeddings") else 2)
    weights = linear * p.weight_bytes + embeddings * p.other_weight_bytes
    seqs = config.max_batch_size or 1
    tokens = min(request_tokens, config.max_model_len or request_tokens)
    kv_per_token = 2 * layers * kv_heads * head_dim * kv_bytes_per_element(config.precision, config.kv_cache_dtype)
    kv = seqs * tokens * kv_per_token
    note = (f"weights {weights / GIB:.2f} GiB + KV {kv / GIB:.2f} GiB ({seqs} sequences x {tokens} tokens x "
            f"{kv_per_token / 1024:.0f} KiB per token)")
    return weights + kv, note
