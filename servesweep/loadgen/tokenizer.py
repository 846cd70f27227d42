"""Token counting with the target model's own tokenizer.

Prompts must have an exact token count as the server counts it. Two sources:
  - `LocalTokenizer`: the model directory's `tokenizer.json`, loaded with `tokenizers`;
  - `ServerTokenizer`: the server's `/tokenize` and `/detokenize` endpoints (vLLM has both),
    for when the tokenizer is not on this machine.
Both count special tokens the way a completions request does (BOS included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import aiohttp
import numpy as np
from tokenizers import Tokenizer


class TokenizerLike(Protocol):
    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    async def decode(self, ids: list[int]) -> str: ...

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        """`n` ordinary token ids to build random text from."""
        ...


class LocalTokenizer:
    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        path = self.model_dir / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
        self._tok = Tokenizer.from_file(str(path))
        special = {i for i, tok in self._tok.get_added_tokens_decoder().items() if tok.special}
        self._pool = self._word_tokens(special)

    def _word_tokens(self, special: set[int], max_checked: int = 20000) -> np.ndarray:
        """Tokens that are a space plus letters and encode back to themselves.

        A run of such tokens splits at every space in pre-tokenization, so random text made of
        them re-encodes to exactly the same ids: prompts get their exact length at once.
        """
        vocab = self._tok.get_vocab_size(with_added_tokens=False)
        ids = np.arange(vocab)
        if vocab > max_checked:
            ids = np.random.default_rng(0).choice(vocab, max_checked, replace=False)
        pool = []
        for i in ids.tolist():
            if i in special:
                continue
            text = self._tok.decode([i])
            if len(text) > 1 and text[0] == " " and text[1:].isalpha() and text[1:].isascii():
                if self._tok.encode(text, add_special_tokens=False).ids == [i]:
                    pool.append(i)
        if len(pool) < 50:  # an unusual tokenizer: fall back to every ordinary id
            pool = [i for i in range(vocab) if i not in special]
        return np.array(pool)

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    async def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.choice(self._pool, size=n).tolist()


class ServerTokenizer:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, vocab_size: int) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._model = model
        self._vocab_size = vocab_size

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        payload = {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
        async with self._session.post(f"{self._base}/tokenize", json=payload) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self._base}/tokenize answered HTTP {resp.status}: {await resp.text()}")
            return (await resp.json())["tokens"]

    async def decode(self, ids: list[int]) -> str:
        payload = {"model": self._model, "tokens": ids}
        async with self._session.post(f"{self._base}/detokenize", json=payload) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self._base}/detokenize answered HTTP {resp.status}: {await resp.text()}")
            return (await resp.json())["prompt"]

    def random_ids(self, rng: np.random.Generator, n: int) -> list[int]:
        # Low ids are where most tokenizers keep their special and byte tokens.
        return rng.integers(min(1000, self._vocab_size // 4), self._vocab_size, size=n).tolist()
