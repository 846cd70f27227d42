"""Train a small Llama on the standard library's sources: a model with real weights, offline.

Accuracy gates need weights that carry information (dummy weights make every precision
equally meaningless), and no model can be downloaded here. A 4-layer, hidden-256 Llama learns
Python's surface statistics from the stdlib in a few CPU minutes; its held-out perplexity,
written next to an untrained model's of the same shape, shows the weights are real.

    python -m servesweep.models.trained --out DIR            # train (cached by recipe)
    python -m servesweep.models.trained --from DIR --noise 0.3 --out DIR2   # a degraded copy

The result is a vLLM-loadable directory: config.json, model.safetensors (float32), tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from servesweep.models.stdlib_corpus import split_sources
from servesweep.models.tiny import BOS, EOS, TinyModelShape, default_cache_dir, llama_config, save_tokenizer, train_tokenizer

RECIPE_FILE = "servesweep-training.json"


@dataclass(frozen=True)
class TrainingRecipe:
    shape: TinyModelShape = TinyModelShape(num_hidden_layers=4)
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    seed: int = 0
    eval_windows: int = 48


def _encode_files(tokenizer, files: list[Path]) -> list[np.ndarray]:
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    return [np.asarray(enc.ids, dtype=np.int64) for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def _windows(docs: list[np.ndarray], count: int, length: int, bos_id: int, rng: np.random.Generator) -> np.ndarray:
    """`count` windows of BOS + (length - 1) tokens from random offsets: what the server sees per prompt."""
    sizes = np.array([len(d) for d in docs], dtype=np.float64)
    usable = [i for i, d in enumerate(docs) if len(d) >= length]
    weights = sizes[usable] / sizes[usable].sum()
    out = np.empty((count, length), dtype=np.int64)
    out[:, 0] = bos_id
    for row in range(count):
        doc = docs[usable[rng.choice(len(usable), p=weights)]]
        start = int(rng.integers(len(doc) - length + 2))
        out[row, 1:] = doc[start:start + length - 1]
    return out


def _perplexity(model, windows: np.ndarray) -> float:
    import torch

    model.eval()
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for chunk in np.array_split(windows, max(1, len(windows) // 8)):
            ids = torch.from_numpy(chunk)
            loss = model(input_ids=ids, labels=ids).loss  # mean over the predicted positions
            n = ids.shape[0] * (ids.shape[1] - 1)
            total_nll += float(loss) * n
            total_tokens += n
    return math.exp(total_nll / total_tokens)


def _hf_config(recipe: TrainingRecipe, bos_id: int, eos_id: int):
    from transformers import LlamaConfig

    values = llama_config(recipe.shape, bos_id, eos_id, torch_dtype="float32")
    for key in ("architectures", "model_type", "torch_dtype"):  # LlamaConfig sets these itself
        del values[key]
    return LlamaConfig(**values)


def train_model(out_dir: Path | None = None, recipe: TrainingRecipe | None = None, log=print) -> Path:
    """Train (or reuse a directory trained with the same recipe) and return its path."""
    import torch
    from transformers import LlamaForCausalLM

    recipe = recipe or TrainingRecipe()
    out = Path(out_dir) if out_dir else default_cache_dir() / "trained-llama"
    marker = out / RECIPE_FILE
    if marker.exists() and json.loads(marker.read_text()).get("recipe") == asdict(recipe):
        return out
    started = time.monotonic()
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(recipe.seed)
    train_files, held_out_files = split_sources()
    tokenizer = train_tokenizer(recipe.shape.tokenizer_vocab_size, [str(f) for f in train_files])
    bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    train_docs = _encode_files(tokenizer, train_files)
    held_out = _windows(_encode_files(tokenizer, held_out_files), recipe.eval_windows, recipe.seq_len, bos_id,
                        np.random.default_rng(recipe.seed + 1))
    model = LlamaForCausalLM(_hf_config(recipe, bos_id, eos_id))
    untrained_ppl = _perplexity(model, held_out)
    log(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters on "
        f"{sum(len(d) for d in train_docs) / 1e6:.2f} M tokens ({len(train_files)} stdlib files); "
        f"untrained held-out perplexity {untrained_ppl:,.0f}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    for step in range(recipe.steps):
        ids = torch.from_numpy(_windows(train_docs, recipe.batch_size, recipe.seq_len, bos_id, rng))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == recipe.steps - 1:
            log(f"  step {step + 1}/{recipe.steps}: train loss {loss.item():.3f} "
                f"({time.monotonic() - started:.0f} s)")
    trained_ppl = _perplexity(model, held_out)
    log(f"held-out perplexity: trained {trained_ppl:.2f}, untrained {untrained_ppl:,.0f}")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out, recipe.shape.max_position_embeddings)
    # vLLM reads these from config.json / generation_config.json; write them as tiny.py does.
    (out / "config.json").write_text(json.dumps(llama_config(recipe.shape, bos_id, eos_id, "float32"), indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": bos_id, "eos_token_id": eos_id}))
    marker.write_text(json.dumps({
        "recipe": asdict(recipe),
        "train_files": len(train_files), "held_out_files": [f.name for f in held_out_files],
        "train_tokens": int(sum(len(d) for d in train_docs)),
        "held_out_perplexity": {"trained": trained_ppl, "untrained": untrained_ppl,
                                "windows": recipe.eval_windows, "tokens_per_window": recipe.seq_len},
        "training_seconds": round(time.monotonic() - started, 1),
    }, indent=2))
    return out


def degrade_model(source: Path, out_dir: Path, relative_noise: float, seed: int = 0) -> Path:
    """A copy of `source` with Gaussian noise of `relative_noise` x each tensor's std added to its weights."""
    import torch
    from safetensors.torch import load_file, save_file

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    # The source's own records stay out: a damaged copy must not pass for a current build of its source.
    shutil.copytree(source, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "servesweep-*.json"))
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(str(Path(source) / "model.safetensors"))
    for name, tensor in weights.items():
        if tensor.is_floating_point() and tensor.numel() > 1 and "norm" not in name:
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            weights[name] = tensor + noise * tensor.std() * relative_noise
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    # The source by name and the file that says what it is (no machine path: this file is committed with results).
    source_facts = {f: json.loads((Path(source) / f).read_text()) for f in (RECIPE_FILE, "servesweep-provenance.json")
                    if (Path(source) / f).exists()}
    (out_dir / "servesweep-degraded.json").write_text(json.dumps({"source": Path(source).name, **source_facts,
                                                                   "relative_noise": relative_noise,
                                                                   "seed": seed}, indent=2))
    return out_dir


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="train a small Llama on the stdlib, or degrade a trained one")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=TrainingRecipe.steps)
    parser.add_argument("--from", dest="source", type=Path, default=None, help="with --noise: the model to degrade")
    parser.add_argument("--noise", type=float, default=None, help="relative weight noise for a degraded copy")
    args = parser.parse_args()
    if args.noise is not None:
        if args.source is None:
            parser.error("--noise needs --from DIR")
        print(degrade_model(args.source, args.out, args.noise))
        return
    path = train_model(args.out, TrainingRecipe(steps=args.steps))
    print(json.dumps(json.loads((path / RECIPE_FILE).read_text())["held_out_perplexity"], indent=2))
    print(path)


if __name__ == "__main__":
    main()
