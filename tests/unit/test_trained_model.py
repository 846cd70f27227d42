"""The small-model trainer (servesweep.models.trained) on a recipe cut to seconds: the suite no
longer trains the shipped 5.3 M-parameter recipe (issue 33: 434 s of a fresh machine's CI; the
sweep e2e test serves dummy weights and the gate tests SmolLM2), so this is where the trainer,
its output directory and its cache-by-recipe are held to what they promise."""

import dataclasses
import json
import shutil

import pytest

pytest.importorskip("torch", reason="the trainer needs torch (the cpu extra)")

from servesweep.models.tiny import TinyModelShape
from servesweep.models.trained import RECIPE_FILE, TrainingRecipe, train_model

RECIPE = TrainingRecipe(shape=TinyModelShape(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=2, intermediate_size=128, vocab_size=512,
                                             tokenizer_vocab_size=512),
                        steps=40, batch_size=4, seq_len=64, warmup_steps=4, eval_windows=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    return train_model(out, RECIPE, log=lambda line: None)


def test_training_lowers_the_held_out_perplexity_by_far(trained):
    record = json.loads((trained / RECIPE_FILE).read_text())
    ppl = record["held_out_perplexity"]
    # Untrained, a 512-id model is near-uniform (~512); 40 steps learn the byte-pair statistics.
    assert ppl["untrained"] > 300
    assert ppl["trained"] < ppl["untrained"] / 3, ppl
    assert record["train_tokens"] > 100_000 and record["held_out_files"]


def test_the_directory_is_a_model_transformers_loads(trained):
    from transformers import AutoTokenizer, LlamaForCausalLM

    config = json.loads((trained / "config.json").read_text())
    assert config["vocab_size"] == 512 and config["num_hidden_layers"] == 1
    model = LlamaForCausalLM.from_pretrained(str(trained))
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    ids = tokenizer("def main():\n    return 0\n")["input_ids"]
    assert 0 < len(ids) < 30 and max(ids) < 512
    import torch

    assert model(input_ids=torch.tensor([ids])).logits.shape[-1] == 512


def test_the_same_recipe_is_reused_and_another_retrains(trained, tmp_path):
    copy = shutil.copytree(trained, tmp_path / "model")
    before = (copy / "model.safetensors").stat().st_mtime_ns
    assert train_model(copy, RECIPE, log=lambda line: None) == copy
    assert (copy / "model.safetensors").stat().st_mtime_ns == before  # not retrained
    other = dataclasses.replace(RECIPE, steps=2, warmup_steps=1)
    lines: list[str] = []
    train_model(copy, other, log=lines.append)
    assert any("step 2/2" in line for line in lines)
    assert json.loads((copy / RECIPE_FILE).read_text())["recipe"]["steps"] == 2
