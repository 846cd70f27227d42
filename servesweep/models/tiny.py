"""Build a small Llama-architecture model directory offline.

No model can be downloaded here, so the built-in target serves a directory made on the spot:
a Llama `config.json`, a byte-level BPE tokenizer trained locally on the Python standard
library's sources, and no weights (vLLM fills them with `--load-format dummy`). The result is
cached: building it is deterministic for a given shape, and a second call reuses it.

The tokenizer covers the model's whole vocabulary. A real model's shape (Llama-3-8B: 128,256
ids) is far larger than what a few MB of text can train, and dummy weights sample ids from the
whole range: before 2026-12, ids past the trained 4,099 decoded to empty text, so 97 % of the
streamed tokens carried no text, unlike any real model (and servesweep, which then timed TTFT at
the first visible text, read it 1.8-2.7x too high on the H200). The ids past the trained ones
now decode to short words of their own (" v4100", ...): entries of the BPE vocabulary that no
merge produces, so prompts still tokenize with the trained merges alone.
"""

from __future__ import annotations

import json
import os
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# A minimal chat template so /v1/chat/completions works against the tiny model.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelShape:
    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 688
    vocab_size: int = 4096
    max_position_embeddings: int = 2048
    tokenizer_vocab_size: int = 4096  # trained ids; build_tiny_model fills the rest (see above)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# Real architectures' shapes, for dummy-weight servers that load a GPU like the real model would.
SHAPES: dict[str, TinyModelShape] = {
    "tiny": TinyModelShape(),
    "llama3-8b": TinyModelShape(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                                max_position_embeddings=8192),
}


def default_cache_dir() -> Path:
    root = os.environ.get("SERVESWEEP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "servesweep"
    )
    return Path(root)


def _training_files(limit_bytes: int = 6_000_000) -> list[str]:
    """Python stdlib sources: offline, on every machine that runs servesweep."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        size = path.stat().st_size
        files.append(str(path))
        total += size
        if total >= limit_bytes:
            break
    return files


def train_tokenizer(vocab_size: int, files: list[str] | None = None) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(files or _training_files(), trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Prepend BOS like Llama tokenizers do, so prompt token counts match what the server sees.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


FILL_PREFIX = "\u0120v"  # byte-level BPE's form of " v": filler ids decode to " v<id>"


def cover_vocabulary(tokenizer: Tokenizer, vocab_size: int) -> Tokenizer:
    """`tokenizer` with its BPE vocabulary grown to `vocab_size` ids, each new id decoding to a
    word of its own. No merge yields the new entries, so encoding is unchanged."""
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    taken = set(vocab.values()) | {t["id"] for t in data.get("added_tokens", [])}
    for i in range(vocab_size):
        if i not in taken:
            word = f"{FILL_PREFIX}{i}"
            assert word not in vocab, word
            vocab[word] = i
    return Tokenizer.from_str(json.dumps(data))


def save_tokenizer(tokenizer: Tokenizer, out: Path, max_len: int) -> None:
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # transformers comes with the vLLM extra; without it write the files directly
        tokenizer.save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": BOS,
                    "eos_token": EOS,
                    "pad_token": PAD,
                    "model_max_length": max_len,
                    "chat_template": CHAT_TEMPLATE,
                },
                indent=2,
            )
        )
        return
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=max_len
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def llama_config(shape: TinyModelShape, bos_id: int, eos_id: int, torch_dtype: str = "bfloat16") -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": torch_dtype,
        "attention_bias": False,
        "mlp_bias": False,
    }


# Bumped when a build of the same shape changes (2: the vocabulary fill), so cached directories
# made by an older servesweep are rebuilt.
BUILD_VERSION = 2


def _marker(shape: TinyModelShape, fill: bool) -> dict:
    return asdict(shape) | {"build": BUILD_VERSION, "fill_vocabulary": fill}


def build_tiny_model(out_dir: Path | None = None, shape: TinyModelShape | None = None,
                     fill_vocabulary: bool = True) -> Path:
    """Create (or reuse) a tiny Llama model directory and return its path.

    `fill_vocabulary=False` leaves the ids past the trained ones without text, as a tokenizer that
    does not cover its model's vocabulary streams (the tests build such a model on purpose)."""
    shape = shape or TinyModelShape()
    out = Path(out_dir) if out_dir else default_cache_dir() / "tiny-llama"
    marker = out / "servesweep-shape.json"
    if marker.exists() and json.loads(marker.read_text()) == _marker(shape, fill_vocabulary):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(min(shape.tokenizer_vocab_size, shape.vocab_size))
    if fill_vocabulary and tokenizer.get_vocab_size() < shape.vocab_size:
        tokenizer = cover_vocabulary(tokenizer, shape.vocab_size)
    save_tokenizer(tokenizer, out, shape.max_position_embeddings)
    config = llama_config(shape, tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]})
    )
    marker.write_text(json.dumps(_marker(shape, fill_vocabulary)))
    return out


def main() -> None:
    """`python -m servesweep.models.tiny --shape llama3-8b --out DIR`"""
    import argparse

    parser = argparse.ArgumentParser(description="build an offline model directory (config + tokenizer)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(build_tiny_model(args.out, SHAPES[args.shape]))


if __name__ == "__main__":
    main()
