"""Prompt building with the tiny model's real tokenizer."""

import json

import numpy as np
import pytest

from servesweep.loadgen.tokenizer import LocalTokenizer
from servesweep.loadgen.workload import Workload, build_prompts


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return LocalTokenizer(tiny_model_dir)


async def test_synthetic_prompts_have_exact_token_counts_and_are_unique(tokenizer):
    wl = Workload(input_len="uniform:16:300", output_len="lognormal:64:0.5")
    items = await build_prompts(wl, 200, tokenizer, np.random.default_rng(0))
    for item in items:
        assert len(await tokenizer.encode(item.text)) == item.prompt_len
    wanted = wl.input_len.sample(np.random.default_rng(0), 200)
    assert [i.prompt_len for i in items] == wanted.tolist()
    assert len({i.text for i in items}) == 200
    assert all(i.output_len >= 1 for i in items)


async def test_same_seed_same_prompts(tokenizer):
    wl = Workload(input_len=64)
    a = await build_prompts(wl, 20, tokenizer, np.random.default_rng(5))
    b = await build_prompts(wl, 20, tokenizer, np.random.default_rng(5))
    assert [x.text for x in a] == [x.text for x in b]


async def test_shared_prefix(tokenizer):
    wl = Workload(input_len=200, shared_prefix_len=120)
    items = await build_prompts(wl, 10, tokenizer, np.random.default_rng(1))
    first = [await tokenizer.encode(i.text) for i in items]
    common = min(len(np.nonzero(np.array(a[:100]) != np.array(first[0][:100]))[0]) == 0 for a in first)
    assert common
    assert all(abs(i.prompt_len - 200) <= 2 for i in items)
    assert len({i.text for i in items}) == 10


async def test_sharegpt_dataset(tokenizer, tmp_path):
    path = tmp_path / "chat.jsonl"
    lines = [
        {"conversations": [{"from": "human", "value": "def add(a, b):"}, {"from": "gpt", "value": "return a + b"}]},
        {"prompt": "import os", "output_len": 7},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = await build_prompts(Workload(dataset=path), 4, tokenizer, np.random.default_rng(0))
    assert [i.text for i in items] == ["def add(a, b):", "import os"] * 2
    assert items[0].output_len == len(await tokenizer.encode("return a + b", add_special_tokens=False))
    assert items[1].output_len == 7
    assert items[0].prompt_len == len(await tokenizer.encode("def add(a, b):"))


async def test_broken_dataset_line_is_named(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"nothing": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        await build_prompts(Workload(dataset=path), 2, tokenizer, np.random.default_rng(0))
