"""Train a larger stdlib Llama on the GPU, for when the shipped 5 M-parameter model is too small to
show FP8 (issue 16: "if vLLM left layers that small unquantized, use a larger model trained on the GPU").

    PYTHONPATH=$PWD python3 bench/gpu/train_large.py --out /tmp/trained-large [--layers 12 --hidden 768 --steps 1200]

The recipe is servesweep.models.trained's (same corpus split by file-name hash, so the gate's
held-out eval sets stay unseen; same tokenizer training; same windows), scaled up and run on
CUDA with bf16 autocast. The directory it writes is vLLM-loadable like the shipped model's
(config.json, float32 model.safetensors, tokenizer) and carries its provenance in
servesweep-training.json: recipe, device, held-out perplexity trained vs untrained, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from servesweep.models.stdlib_corpus import split_sources
from servesweep.models.tiny import BOS, EOS, TinyModelShape, llama_config, save_tokenizer, train_tokenizer
from servesweep.models.trained import RECIPE_FILE, TrainingRecipe, _encode_files, _hf_config, _windows


def perplexity(model, windows: np.ndarray, device: str) -> float:
    import torch

    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in np.array_split(windows, max(1, len(windows) // 8)):
            ids = torch.from_numpy(chunk).to(device)
            loss = model(input_ids=ids, labels=ids).loss.float()
            n = ids.shape[0] * (ids.shape[1] - 1)
            nll += float(loss) * n
            count += n
    model.train()
    return math.exp(nll / count)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--time-limit-s", type=float, default=300.0, help="stop training early past this")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()

    import torch
    from transformers import LlamaForCausalLM

    shape = TinyModelShape(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                           num_key_value_heads=args.heads, intermediate_size=args.intermediate)
    recipe = TrainingRecipe(shape=shape, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                            learning_rate=args.lr, warmup_steps=max(20, args.steps // 20))
    started = time.monotonic()
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    train_files, held_out_files = split_sources()
    tokenizer = train_tokenizer(shape.tokenizer_vocab_size, [str(f) for f in train_files])
    bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    train_docs = _encode_files(tokenizer, train_files)
    held_out = _windows(_encode_files(tokenizer, held_out_files), recipe.eval_windows, recipe.seq_len, bos_id,
                        np.random.default_rng(recipe.seed + 1))
    model = LlamaForCausalLM(_hf_config(recipe, bos_id, eos_id)).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    untrained = perplexity(model, held_out, args.device)
    print(f"{n_params / 1e6:.1f} M parameters, {sum(len(d) for d in train_docs) / 1e6:.2f} M training tokens, "
          f"untrained held-out perplexity {untrained:,.0f} ({time.monotonic() - started:.0f} s)", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01, fused=args.device == "cuda")

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    history = []
    steps_done = 0
    train_started = time.monotonic()
    for step in range(recipe.steps):
        ids = torch.from_numpy(_windows(train_docs, recipe.batch_size, recipe.seq_len, bos_id, rng)).to(args.device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=args.device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps_done = step + 1
        if step % 100 == 0 or step == recipe.steps - 1:
            ppl = perplexity(model, held_out, args.device) if step % 300 == 0 else None
            history.append({"step": steps_done, "train_loss": loss.item(), "held_out_perplexity": ppl,
                            "seconds": round(time.monotonic() - started, 1)})
            print(f"  step {steps_done}/{recipe.steps}: loss {loss.item():.3f}"
                  + (f", held-out perplexity {ppl:.2f}" if ppl else "") + f" ({time.monotonic() - started:.0f} s)",
                  flush=True)
        if time.monotonic() - train_started > args.time_limit_s:
            print(f"  time limit: stopped after {steps_done} steps", flush=True)
            break
    trained = perplexity(model, held_out, args.device)
    print(f"held-out perplexity: trained {trained:.2f}, untrained {untrained:,.0f}", flush=True)

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.float().cpu().save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out, shape.max_position_embeddings)
    (out / "config.json").write_text(json.dumps(llama_config(shape, bos_id, eos_id, "float32"), indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": bos_id, "eos_token_id": eos_id}))
    provenance = {
        "recipe": asdict(recipe), "steps_done": steps_done, "parameters": n_params,
        "trained_on": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__, "bf16_autocast": args.device == "cuda",
        "train_files": len(train_files), "held_out_files": [f.name for f in held_out_files],
        "train_tokens": int(sum(len(d) for d in train_docs)),
        "held_out_perplexity": {"trained": trained, "untrained": untrained, "windows": recipe.eval_windows,
                                "tokens_per_window": recipe.seq_len},
        "history": history, "training_seconds": round(time.monotonic() - started, 1),
        "script": "bench/gpu/train_large.py",
    }
    (out / RECIPE_FILE).write_text(json.dumps(provenance, indent=2))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
